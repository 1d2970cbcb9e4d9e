"""The merchant console at ``/dashboard/...``: products, channels, the WeCom entry point and
bulk import, beside the dashboard's figures (``gateway.dashboard``), sharing its sessions,
CSRF checks and layout.

Pages are rendered on the server (jinja2, autoescaped), fetch nothing from elsewhere, and
use one small script of ours (copy buttons). Forms are named by the API's JSON paths and
checked by the API's own code: the console and the API accept and refuse the same input
with the same error code. ``merchant`` logins edit; ``marketing`` logins see the same pages
without edit controls, and every write they try is answered 403.
"""

from __future__ import annotations

from aiohttp import web

from . import channels, entry, imports, products

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    """Call before the dashboard's routes: its ``/dashboard/products/{id}`` and catch-all
    would otherwise take the console's fixed paths."""
    products.setup_routes(app)
    channels.setup_routes(app)
    entry.setup_routes(app)
    imports.setup_routes(app)
