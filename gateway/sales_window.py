"""A product's sales window on the shopper's side: before ``valid_from`` the share link says
"not yet", from ``valid_until`` on "ended", and the click counts either way.

The share link asks only for a link whose cached entry carries a window
(``CachedLink.window``); every other click never looks at it.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from .clock import DayClock
from .pages import Pages
from .store import Product

__all__ = ["closed_page", "within"]


def within(window: tuple[float | None, float | None], now: float) -> bool:
    """``now`` is inside the window (an open end is no bound)."""
    start, end = window
    return (start is None or now >= start) and (end is None or now < end)


def _when(seconds: float, clock: DayClock) -> str:
    moment = datetime.fromtimestamp(seconds, clock.zone)
    return f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"


def closed_page(pages: Pages, clock: DayClock, product: Product, now: float,
                entry_url: str | None) -> web.Response:
    """The page of a product outside its window: 200 before it opens, 410 after it closed."""
    if product.valid_from is not None and now < product.valid_from:
        return pages.render(
            "closed.html", product=product, state="scheduled", entry_url=entry_url,
            heading="还没开始", detail=f"{_when(product.valid_from, clock)} 开始，到时再来看看吧。")
    assert product.valid_until is not None
    return pages.render(
        "closed.html", status=410, product=product, state="ended", entry_url=entry_url,
        heading="已经结束", detail=f"{_when(product.valid_until, clock)} 已结束，感谢关注。")
