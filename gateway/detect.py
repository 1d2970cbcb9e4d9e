"""Which app is the shopper in? One detector for the hot path and ``linkloop detect``.

Order: bots first (a preview fetcher may carry an app's name), then the adapters in registry
order (first claim wins), then plain web. The User-Agent is the strongest signal; a plain
browser falls back to the ``?ch=`` channel and then the Referer host.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import LRUCache
from yarl import URL

from adapters import ADAPTERS, Adapter, by_platform
from adapters.base import host_is_within

__all__ = ["Detection", "Detector", "detect_user_agent"]

# Substrings that mark an automated client. Checked case-insensitively.
_BOT_MARKERS = (
    "bot", "spider", "crawler", "crawl", "slurp", "facebookexternalhit", "preview",
    "embedly", "python-requests", "curl/", "wget/", "headlesschrome", "linkservice",
)

_MOBILE_MARKERS = ("Mobile", "Android", "iPhone", "iPad", "HarmonyOS", "OpenHarmony")


@dataclass(frozen=True, slots=True)
class Detection:
    platform: str
    bot: bool
    mobile: bool
    os: str
    #: What decided the platform: ``ua``, ``channel``, ``referer`` or ``none``.
    source: str = "ua"

    def as_json(self) -> dict[str, object]:
        return {"platform": self.platform, "bot": self.bot, "mobile": self.mobile, "os": self.os}


def _os_of(ua: str) -> str:
    if "HarmonyOS" in ua or "OpenHarmony" in ua:
        return "harmonyos"
    if "iPhone" in ua or "iPad" in ua or "iOS" in ua or "CPU OS" in ua:
        return "ios"
    if "Android" in ua:
        return "android"
    if "Windows" in ua:
        return "windows"
    if "Mac OS X" in ua or "Macintosh" in ua:
        return "macos"
    if "Linux" in ua or "X11" in ua:
        return "linux"
    return "other"


def detect_user_agent(ua: str, adapters: tuple[Adapter, ...] = ADAPTERS) -> Detection:
    """Classify one User-Agent; pure and uncached (``Detector`` caches)."""
    lowered = ua.lower()
    bot = not ua or any(m in lowered for m in _BOT_MARKERS)
    platform = "web"
    for adapter in adapters:
        if adapter.claims(ua):
            platform = adapter.platform
            break
    mobile = any(m in ua for m in _MOBILE_MARKERS)
    return Detection(platform=platform, bot=bot, mobile=mobile, os=_os_of(ua),
                     source="ua" if platform != "web" else "none")


class Detector:
    """Detection with a bounded cache: real traffic repeats a small set of User-Agents."""

    def __init__(self, cache_size: int = 10_000) -> None:
        self._cache: LRUCache[str, Detection] = LRUCache(maxsize=cache_size)

    def user_agent(self, ua: str) -> Detection:
        found = self._cache.get(ua)
        if found is None:
            found = detect_user_agent(ua)
            self._cache[ua] = found
        return found

    def request(
        self, ua: str, channel: str | None, referer: str | None,
        channels: frozenset[str] = frozenset(),
    ) -> Detection:
        """The shopper's platform: User-Agent, then ``?ch=``, then the Referer host."""
        found = self.user_agent(ua)
        if found.source == "ua" or found.bot:
            return found
        if channel:
            if by_platform(channel) is not None:
                return _with(found, channel, "channel")
            if channel in channels:
                return _with(found, "web", "channel")
        if referer:
            try:
                host = URL(referer).host or ""
            except ValueError:
                host = ""
            if host:
                for adapter in ADAPTERS:
                    if adapter.referer_hosts and host_is_within(host, adapter.referer_hosts):
                        return _with(found, adapter.platform, "referer")
        return found


def _with(found: Detection, platform: str, source: str) -> Detection:
    return Detection(platform=platform, bot=found.bot, mobile=found.mobile, os=found.os,
                     source=source)
