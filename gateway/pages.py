"""Pages for shoppers: landing, link preview for bots, and plain error pages.

Templates are compiled once when the app starts (never at import) and autoescaped.
"""

from __future__ import annotations

from typing import Any

import jinja2
import segno
from aiohttp import web

__all__ = ["Pages", "qr_svg"]


def qr_svg(data: str, scale: int = 4) -> str:
    """An inline SVG QR code (no XML declaration), for the desktop landing page."""
    return str(segno.make(data, error="m").svg_inline(scale=scale, dark="#111"))


class Pages:
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        # Compile every template now: the first shopper must not pay for it.
        self._templates = {name: self.env.get_template(name)
                           for name in self.env.list_templates(extensions=["html"])}

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        body = self._templates[name].render(**context)
        return web.Response(
            text=body, status=status, content_type="text/html", charset="utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                     "Referrer-Policy": "no-referrer"},
        )

    def message(self, status: int, code: str, title: str, detail: str) -> web.Response:
        """A plain page for a shopper: what went wrong, in words, with a stable code."""
        return self.render("message.html", status=status, code=code, title=title,
                           detail=detail)
