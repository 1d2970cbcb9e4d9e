"""Platform adapters, one module per platform, in one explicit ordered registry.

Order matters for detection: the first adapter that claims a User-Agent wins, so a more
specific app comes before the app whose markers it also carries (WeCom before WeChat), and
the plain-web fallback is last.
"""

from __future__ import annotations

from .base import Adapter, Storefront, Target, TargetError
from .jd import JD
from .taobao import Taobao
from .web import Web
from .wechat import WeChat

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Storefront",
    "Target",
    "TargetError",
    "by_platform",
    "platform_ids",
]

#: Every adapter, in detection order; the web fallback is last.
ADAPTERS: tuple[Adapter, ...] = (
    WeChat(),
    Taobao(),
    JD(),
    Web(),
)

_BY_PLATFORM: dict[str, Adapter] = {a.platform: a for a in ADAPTERS}


def by_platform(platform: str) -> Adapter | None:
    """The adapter for a platform id, or None when the id is unknown."""
    return _BY_PLATFORM.get(platform)


def platform_ids() -> tuple[str, ...]:
    return tuple(_BY_PLATFORM)
