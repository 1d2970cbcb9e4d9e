"""Which app is the shopper in? One detector for the hot path and ``linkloop detect``.

Order: our own bot markers first (a preview fetcher may carry an app's name:
``DingTalkBot-LinkService``, ``ToutiaoSpider``), then the adapters in registry order (first
claim wins), then plain web. A bot is flagged, not a platform: its User-Agent gives ``web``.

Beyond our markers (search spiders, Chinese link-preview fetchers, HTTP libraries), a
User-Agent no app claims is a bot when:

- it matches a pattern of the ``crawler-user-agents`` list (monperrus/crawler-user-agents
  on PyPI, MIT, updated every few weeks): 1,500 crawlers, unfurlers, monitors and feed
  fetchers, minus the few patterns that also name a real browser (``_NOT_BOTS``);
- it gives a URL or an e-mail address to contact (the convention of automated clients;
  no browser or app puts one in its User-Agent);
- it names no operating system or device and no browser or browser engine at all
  (``curl``-like tools, scripts, monitors, ``Mozilla/5.0 (compatible; Scanner/1.0)``: a
  person's browser or app always says what it runs on).

The list can't turn an app into a bot: it applies only when no app claims the User-Agent.

The User-Agent is the strongest signal and says what the shopper's app *can do*. When no app
claims it (a plain browser), the ``?ch=`` channel and then the Referer host may still name
the platform the click came from, for attribution; ``source`` records which signal decided.

Everything is one pass of substring tests on the once-lower-cased header (Aho-Corasick: our
markers, the apps' markers and a literal every list pattern requires), then a regular
expression only to confirm a hit: 10,000 User-Agents take well under half a second
uncached, and ``Detector`` caches, so a click pays for none of it.
"""

from __future__ import annotations

import functools
import re
import re._constants as sre_constants  # what re._parser's nodes are
import re._parser as sre_parser  # the literals a pattern requires, from its parse tree
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import ahocorasick
import crawleruseragents

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
# Words of automated clients that an app's own User-Agent might still hold (an app named
# "... Monitor"), so tried only on agents no app claims, like the crawler list: site
# checkers and monitors (Chinese ones say "jiankong", 监控), and Google's fetchers that name
# no bot, before or after "Google" ("Google-AMPHTML", "Google-Sites-Thumbnails",
# "DuplexWeb-Google/1.0" in a Pixel's Chrome). None is in a person's browser or app among
# the 38,000 of matomo-org/device-detector's fixtures.
_UNCLAIMED_BOT_WORDS = ("checker", "monitor", "jiankong", "google-", "-google/")
# ``bot`` only at the end of a word (Googlebot/, Slackbot-, TelegramBot, BaiduAdsBot), and
# not the phone brand Cubot. Checked only when the cheap ``"bot" in`` test hits.
_BOT_WORD = re.compile(r"(?<!cu)bot\b")


_BOT, _MOBILE = -1, -2  # what a marker means, beside an adapter's index in the registry
_LISTED = -3  # below this: -3 - k means "list pattern k may match: confirm it"

#: crawler-user-agents patterns that also match real browsers and apps (seen in public
#: device fixtures, tests/data/ua/browsers.tsv and extra.tsv): ``Sogou`` is Sogou's mobile
#: browser and search app as well as its spiders (which say "spider": our own marker),
#: ``Fluid`` a Mac browser, ``Sonic`` also every ViewSonic phone and tablet. The rest name a
#: phone: ``AP3A.240617.008`` is the Android 15 build of OPPO, realme and OnePlus phones
#: (the list's own sample is Instagram on an OPPO phone), so every shopper on one, in
#: Quark, UC, QQ Browser or any app, was a bot; ``Butterfly`` is HTC's, ``Fever`` Wiko's,
#: ``Expanse`` a phone too, and ``008/`` ends a DESAY model (``TS1008/1.0``). The crawlers
#: those patterns were written for give a URL or an e-mail address, which flags them still.
_NOT_BOTS = frozenset({"Sogou", "Fluid", "Sonic", r"AP3A\.240617\.008", "Butterfly",
                       "Fever", "Expanse", r"008\/"})


def _required_literals(pattern: str) -> list[str] | None:
    """Lower-cased text a match of ``pattern`` must contain, one per alternative of a
    top-level ``|``: the longest run of plain characters in each; None if some
    alternative has no run of three (the pattern is then tried on every agent)."""
    parsed = list(sre_parser.parse(pattern))
    branches = ([list(b) for b in parsed[0][1][1]]
                if len(parsed) == 1 and parsed[0][0] is sre_constants.BRANCH else [parsed])
    found = []
    for branch in branches:
        best = run = ""
        for op, value in branch:
            if op is sre_constants.LITERAL:
                run += chr(value)
                continue
            best, run = max(best, run, key=len), ""
        best = max(best, run, key=len)
        if len(best) < 3:
            return None
        found.append(best.lower())
    return found


@functools.lru_cache(maxsize=1)
def _listed_bots() -> tuple[tuple[re.Pattern[str], ...], dict[str, set[int]],
                            tuple[re.Pattern[str], ...]]:
    """The list's patterns compiled, the literals that point at them, and those tried on
    every unclaimed agent (none with today's list)."""
    patterns = [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
                if entry["pattern"] not in _NOT_BOTS]
    compiled = tuple(re.compile(p) for p in patterns)
    literals: dict[str, set[int]] = {}
    always = []
    for index, pattern in enumerate(patterns):
        required = _required_literals(pattern)
        if required is None:
            always.append(compiled[index])
            continue
        for literal in required:
            literals.setdefault(literal, set()).add(index)
    return compiled, literals, tuple(always)


@functools.lru_cache(maxsize=8)
def _marker_search(adapters: tuple[Adapter, ...]) -> Any:
    """One automaton for every marker detection looks for: bots, handhelds, each app's, and
    a literal of each listed crawler pattern.

    A new User-Agent is read once, in C, for all of them (Aho-Corasick, pyahocorasick),
    instead of once per marker: ~1,600 substring searches and twenty adapter calls.
    Each marker maps to what it means: _BOT, _MOBILE, the indexes of the adapters that
    list it, or list patterns to confirm (a marker may mean several things).
    """
    meanings: dict[str, set[int]] = {}
    for marker in _BOT_MARKERS:
        meanings.setdefault(marker, set()).add(_BOT)
    for marker in _MOBILE_MARKERS:
        meanings.setdefault(marker, set()).add(_MOBILE)
    for index, adapter in enumerate(adapters):
        for marker in adapter.ua_markers:
            meanings.setdefault(marker.lower(), set()).add(index)
    for literal, indexes in _listed_bots()[1].items():
        meanings.setdefault(literal, set()).update(_LISTED - i for i in indexes)
    automaton = ahocorasick.Automaton()
    for marker, meant in meanings.items():
        automaton.add_word(marker, tuple(meant))
    automaton.make_automaton()
    return automaton


# Automated clients' conventions: a URL or an e-mail address to reach their owner.
_CONTACT = re.compile(r"https?://|\bwww\.|[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b")
# What every person's browser or app names: an operating system or device, a browser or a
# browser engine. A bare "Mozilla/5.0" is not one: "Mozilla/5.0 (compatible; Name/1.0)" is
# how scanners and fetchers write themselves, and every browser says what it runs on.
_DEVICE_OR_BROWSER = re.compile(
    r"windows|macintosh|mac os|x11|linux|android|iphone|ipad|ipod|darwin|cros|harmonyos|"
    r"openharmony|symbian|series ?[46]0|blackberry|bb10|midp|j2me|tizen|kaios|webos|"
    r"playstation|nintendo|xbox|bada|meego|sailfish|bsd|sunos|nokia|mobile|cpu os|\bios\b|"
    r"smart-?tv|kindle|silk|watch|browser|ucweb|opera|lynx|dillo|netfront|"
    r"obigo|teleca|openwave|up\.|wap|docomo|profile/|"
    r"applewebkit|gecko|khtml|trident|presto|msie|roku|brew|palm|beos|risc ?os|inferno|"
    r"webtv|humax|qnx|amiga|hp-ux|irix|powerpc|\bqsp\b|polaris")


def _listed_or_unlike_a_person(ua: str, lowered: str, candidates: set[int]) -> bool:
    """For an agent no app claims: a listed crawler, or not a person's browser at all."""
    if any(word in lowered for word in _UNCLAIMED_BOT_WORDS):
        return True
    compiled, _literals, always = _listed_bots()
    if any(compiled[_LISTED - c].search(ua) for c in candidates if c <= _LISTED):
        return True
    if any(pattern.search(ua) for pattern in always):
        return True
    return (_CONTACT.search(lowered) is not None
            or _DEVICE_OR_BROWSER.search(lowered) is None)



# Handheld devices. ``mobile`` covers "Mobile/15E148", "Mobile Safari", "IEMobile", "(Mobile;".
# HarmonyOS NEXT names the device first: "(Phone; OpenHarmony 5.0)", "(Tablet; ...)", but
# "(PC; OpenHarmony 5.0)" on a Huawei laptop, so the system's name alone says nothing (its
# phones also say "Mobile", its Android-based ones "Android"). Feature phones say MIDP, or
# run UC's and Openwave's browsers.
_MOBILE_MARKERS = ("mobile", "android", "iphone", "ipad", "ipod", "(phone;", "(tablet;",
                   "windows phone", "midp", "ucweb", "up.browser", "symbian")

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
        for index in sorted(c for c in candidates if c >= 0):
            if adapters[index].claims_lowered(lowered):
                platform = adapters[index].platform
                break
        else:
            bot = _listed_or_unlike_a_person(ua, lowered, candidates)
    # Positional: a named tuple built by keyword costs twice as much, on every new agent.
    return Detection(platform, bot, mobile, _os_of(lowered),
                     "ua" if platform != "web" else "none")


class _AgentCache(dict[str, Detection]):
    """User-Agent -> Detection, detecting on a miss: a hit is a plain dict lookup, in C.
    Emptied when full: an LRU's bookkeeping would cost more than the detection it saves.
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
