"""The marketing dashboard at ``/dashboard``: staff log in and read the figures.

Pages are server-rendered (jinja2) with charts as inline SVG and one stylesheet served by
the gateway itself: no script, no CDN, nothing fetched from elsewhere. The figures are the
stats API's own (``gateway.stats.run_stats``) for the same filters. Staff sessions are
JWT cookies (see ``session``); the JSON API keeps its bearer tokens and never takes them.
"""

from __future__ import annotations

from .views import setup_routes

__all__ = ["setup_routes"]
