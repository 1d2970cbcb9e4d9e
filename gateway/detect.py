"""Which app is the shopper in? One detector for the hot path and ``linkloop detect``.

Order: bots first (a preview fetcher may carry an app's name: ``DingTalkBot-LinkService``,
``ToutiaoSpider``), then the adapters in registry order (first claim wins), then plain web.
A bot is flagged, not a platform: its User-Agent gives ``web``.

The User-Agent is the strongest signal and says what the shopper's app *can do*. When no app
claims it (a plain browser), the ``?ch=`` channel and then the Referer host may still name
the platform the click came from, for attribution; ``source`` records which signal decided.

Everything is substring tests on the once-lower-cased header (a regular expression only to
confirm a cheap hit): 10,000 User-Agents take about a tenth of a second uncached, and
``Detector`` caches.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import ahocorasick

from adapters import ADAPTERS, Adapter, by_platform
from adapters.base import host_is_within

__all__ = ["Detection", "Detector", "detect_user_agent"]

# Automated clients, as substrings of the lower-cased header: search spiders, link-preview
# fetchers that do not call themselves bots, and HTTP libraries no shopper's browser sends.
_BOT_MARKERS = (
    "spider", "crawl", "slurp", "preview", "facebookexternal", "facebookcatalog", "whatsapp",
    "iframely", "embedly", "cardyb", "transcoder", "linkservice", "headlesschrome",
    "apis-google", "mediapartners-google", "google-inspectiontool", "feedfetcher",
    "python-requests", "python-urllib", "aiohttp/", "go-http-client", "okhttp/", "curl/",
    "wget/", "libwww", "httpclient", "scrapy", "node-fetch", "axios/",
)
# ``bot`` only at the end of a word (Googlebot/, Slackbot-, TelegramBot, BaiduAdsBot), and
# not the phone brand Cubot. Checked only when the cheap ``"bot" in`` test hits.
_BOT_WORD = re.compile(r"(?<!cu)bot\b")


_BOT, _MOBILE = -1, -2  # what a marker means, beside an adapter's index in the registry


@functools.lru_cache(maxsize=8)
def _marker_search(adapters: tuple[Adapter, ...]) -> Any:
    """One automaton for every marker detection looks for: bots, handhelds and each app's.

    A new User-Agent is read once, in C, for all of them (Aho-Corasick, pyahocorasick),
    instead of once per marker: ~80 substring searches and twenty adapter calls.
    Each marker maps to what it means: _BOT, _MOBILE or the indexes of the adapters that
    list it (a marker may mean several things).
    """
    meanings: dict[str, set[int]] = {}
    for marker in _BOT_MARKERS:
        meanings.setdefault(marker, set()).add(_BOT)
    for marker in _MOBILE_MARKERS:
        meanings.setdefault(marker, set()).add(_MOBILE)
    for index, adapter in enumerate(adapters):
        for marker in adapter.ua_markers:
            meanings.setdefault(marker.lower(), set()).add(index)
    automaton = ahocorasick.Automaton()
    for marker, meant in meanings.items():
        automaton.add_word(marker, tuple(meant))
    automaton.make_automaton()
    return automaton



# Handheld devices. ``mobile`` covers "Mobile/15E148", "Mobile Safari", "IEMobile", "(Mobile;".
_MOBILE_MARKERS = ("mobile", "android", "iphone", "ipad", "ipod", "harmonyos", "openharmony",
                   "windows phone")

# Longest accepted ``?ch=`` value; anything longer is not a channel name.
_MAX_CHANNEL = 64


class Detection(NamedTuple):
    """What a request says about the shopper's app. A tuple: the hot path hashes it (as a
    cache key) on every click, and a tuple hashes and compares in C."""

    platform: str
    bot: bool
    mobile: bool
    os: str
    #: What decided the platform: ``ua``, ``channel``, ``referer`` or ``none``.
    source: str = "ua"

    def as_json(self) -> dict[str, object]:
        return {"platform": self.platform, "bot": self.bot, "mobile": self.mobile, "os": self.os}


def _os_of(ua: str) -> str:
    """The operating system, from the lower-cased User-Agent. Order matters: an iPhone says
    "like Mac OS X", a Windows Phone may say "Android", HarmonyOS 2 says "Android" too."""
    if "harmonyos" in ua or "openharmony" in ua:
        return "harmonyos"
    if "iphone" in ua or "ipad" in ua or "ipod" in ua or "cpu os" in ua or "ios " in ua:
        return "ios"
    if "windows phone" in ua:
        return "windows"
    if "android" in ua or "dalvik" in ua:
        return "android"
    if "windows" in ua:
        return "windows"
    if "macintosh" in ua or "mac os x" in ua:
        return "macos"
    if "linux" in ua or "x11" in ua or "cros" in ua:
        return "linux"
    return "other"


def detect_user_agent(ua: str, adapters: tuple[Adapter, ...] = ADAPTERS) -> Detection:
    """Classify one User-Agent; pure and uncached (``Detector`` caches)."""
    lowered = ua.lower()
    bot = not ua.strip() or ("bot" in lowered and _BOT_WORD.search(lowered) is not None)
    mobile = False
    candidates: set[int] = set()
    for _end, meanings in _marker_search(adapters).iter(lowered):
        for meaning in meanings:
            if meaning == _BOT:
                bot = True
            elif meaning == _MOBILE:
                mobile = True
            else:
                candidates.add(meaning)
    platform = "web"
    if not bot:
        # Only adapters with a marker present can claim; the registry's order decides.
        for index in sorted(candidates):
            if adapters[index].claims_lowered(lowered):
                platform = adapters[index].platform
                break
    # Positional: a named tuple built by keyword costs twice as much, on every new agent.
    return Detection(platform, bot, mobile, _os_of(lowered),
                     "ua" if platform != "web" else "none")


class _AgentCache(dict[str, Detection]):
    """User-Agent -> Detection, detecting on a miss: a hit is a plain dict lookup, in C,
    with no Python frame (the share link reads it directly). Emptied when full: an LRU's
    bookkeeping would cost more than the detection it saves.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        # One instance per distinct answer (a few hundred at most): thousands of cached
        # User-Agents share a handful of tuples, instead of each adding one more object for
        # the garbage collector to walk on every full pass.
        self._answers: dict[Detection, Detection] = {}

    def __missing__(self, ua: str) -> Detection:
        found = detect_user_agent(ua)
        found = self._answers.setdefault(found, found)
        if len(self) >= self.size:
            self.clear()
        self[ua] = found
        return found


class Detector:
    """Detection with a bounded cache: real traffic repeats a small set of User-Agents."""

    def __init__(self, cache_size: int = 10_000) -> None:
        #: User-Agent -> its Detection; ``agents[ua]`` detects a new one.
        self.agents = _AgentCache(cache_size)

    def user_agent(self, ua: str) -> Detection:
        return self.agents[ua]

    def request(
        self, ua: str, channel: str | None, referer: str | None,
        channels: frozenset[str] = frozenset(),
    ) -> Detection:
        """The shopper's platform: User-Agent, then ``?ch=``, then the Referer host.

        ``channel`` counts only when it is a known platform id or one of the merchant's own
        ``channels``; any other value is ignored (never trusted, never echoed). A merchant
        channel names no platform, so the Referer may still name one. Bots go through the
        same fallbacks, so bot clicks are attributed too (and stay flagged).
        """
        found = self.user_agent(ua)
        if found.source == "ua":
            return found
        name = channel.strip() if channel else ""
        merchant_channel = False
        if name and len(name) <= _MAX_CHANNEL:
            platform = name.lower()
            if by_platform(platform) is not None:
                return _with(found, platform, "channel")
            merchant_channel = name in channels or platform in channels
        host = _referer_host(referer)
        if host:
            for adapter in ADAPTERS:
                if adapter.referer_hosts and host_is_within(host, adapter.referer_hosts):
                    return _with(found, adapter.platform, "referer")
        if merchant_channel:
            return _with(found, "web", "channel")
        return found


def _referer_host(referer: str | None) -> str:
    if not referer or len(referer) > 4096:
        return ""
    try:
        parts = urlsplit(referer.strip())
        if parts.scheme not in ("http", "https"):
            return ""
        return parts.hostname or ""
    except ValueError:
        return ""


def _with(found: Detection, platform: str, source: str) -> Detection:
    return Detection(platform=platform, bot=found.bot, mobile=found.mobile, os=found.os,
                     source=source)
