"""Detection: the real-UA corpus, marker overlaps, os/mobile, and the fallbacks."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from adapters import ADAPTERS, Adapter
from gateway.detect import Detection, Detector, detect_user_agent

from .conftest import DATA

CORPUS = DATA / "ua" / "corpus.tsv"
#: More real User-Agents, gathered after the corpus (tests/data/README.md): read the same way.
EXTRA = DATA / "ua" / "extra.tsv"
APP_LABELS = {a.platform for a in ADAPTERS} - {"web"}


def _corpus(path: Path = CORPUS) -> list[tuple[str, str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(r["expected"], r["user_agent"], r["source"])
                for r in csv.DictReader(handle, delimiter="\t")]


ROWS = _corpus()
EXTRA_ROWS = _corpus(EXTRA)


@pytest.mark.parametrize(("expected", "ua", "source"), ROWS,
                         ids=[f"{i + 2}-{r[0]}" for i, r in enumerate(ROWS)])
def test_corpus_row(expected: str, ua: str, source: str) -> None:
    """Every row detects as its README maps the label (line number in the test id)."""
    _detects_as_labelled(expected, ua, source)


@pytest.mark.parametrize(("expected", "ua", "source"), EXTRA_ROWS,
                         ids=[f"extra-{i + 2}-{r[0]}" for i, r in enumerate(EXTRA_ROWS)])
def test_extra_row(expected: str, ua: str, source: str) -> None:
    """extra.tsv's rows, held to the same label map (line number in the test id)."""
    _detects_as_labelled(expected, ua, source)


def _detects_as_labelled(expected: str, ua: str, source: str) -> None:
    found = detect_user_agent(ua)
    where = f"{source}: {ua}"
    if expected == "bot":
        assert found.bot, where
        return
    assert not found.bot, where
    if expected in APP_LABELS:
        assert found.platform == expected, where
        assert found.source == "ua"
    elif expected == "browser_mobile":
        assert (found.platform, found.mobile) == ("web", True), where
    elif expected == "browser_desktop":
        assert (found.platform, found.mobile) == ("web", False), where
    elif expected == "other_app":
        assert found.platform == "web", where
    else:  # pragma: no cover -- a label the README does not map
        pytest.fail(f"unknown corpus label {expected!r}")


def test_corpus_labels_are_known() -> None:
    assert len(ROWS) == 506  # every row read, none lost to a quoting slip
    labels = {r[0] for r in ROWS}
    assert labels <= APP_LABELS | {"bot", "browser_mobile", "browser_desktop", "other_app"}


def test_extra_rows_are_new_known_and_sourced() -> None:
    assert len(EXTRA_ROWS) == 439  # every row read, none lost to a quoting slip
    labels = {r[0] for r in EXTRA_ROWS}
    assert labels <= APP_LABELS | {"bot", "browser_mobile", "browser_desktop", "other_app"}
    agents = [r[1] for r in EXTRA_ROWS]
    assert len(set(agents)) == len(agents)
    assert not set(agents) & {r[1] for r in ROWS}, "extra.tsv repeats a corpus row"
    for _label, _ua, source in EXTRA_ROWS:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{8}:\S+", source), source


# Intended overlaps: the first adapter's samples also carry the second's markers, and the
# registry order lets the first win. Any other overlap is a marker bug.
SHADOWS = {("wecom", "wechat"), ("wechat_miniprogram", "wechat")}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.platform for a in ADAPTERS])
def test_samples_are_claimed_by_their_adapter_only(adapter: Adapter) -> None:
    for sample in adapter.ua_samples:
        found = detect_user_agent(sample)
        assert not found.bot, sample
        assert found.platform == adapter.platform, sample
        others = {a.platform for a in ADAPTERS if a is not adapter and a.claims(sample)}
        assert {(adapter.platform, o) for o in others} <= SHADOWS, (sample, others)
        if adapter.platform != "web":
            assert adapter.claims(sample)


PITFALLS = [
    # (fragment, platform, bot)
    ("DingTalkBot-LinkService/1.0", "web", True),
    ("Mozilla/5.0 (Linux; Android 13) Mobile Safari/537.36 (compatible; Bytespider)", "web", True),
    ("Mozilla/5.0 (compatible; ToutiaoSpider/1.0)", "web", True),
    ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 facebookexternalhit/1.1",
     "web", True),
    ("", "web", True),
    ("   ", "web", True),
    ("okhttp/4.12.0", "web", True),
    # a phone brand with "bot" in it is not a bot
    ("Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) Mobile Safari/537.36", "web", False),
    ("Mozilla/5.0 (Linux; Android 13) Chrome/120.0 MQQBrowser/14.2 Mobile Safari/537.36",
     "web", False),
    ("Mozilla/5.0 (Linux; Android 13; wv) TBS/046011 MQQBrowser/6.2 MicroMessenger/8.0.44",
     "wechat", False),
    ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 QQ/9.0.20", "wechat", False),
    ("Mozilla/5.0 (iPhone) Mobile/15E148 QQ/8.2.6 miniProgram miniprogramhtmlwebview",
     "qq", False),
    ("Mozilla/5.0 (iPhone) Mobile/15E148 wxwork/4.1.20 MicroMessenger/7.0.1 miniProgram",
     "wecom", False),
    ("Mozilla/5.0 (Linux; Android 13) AliApp(TB/10.30.0) WindVane/8.5.0", "taobao", False),
    ("Mozilla/5.0 (iPhone) Mobile/15E148 WindVane tae_sdk Weibo (iPhone__weibo__14.1.0)",
     "weibo", False),
    ("Mozilla/5.0 (Linux; Android 13; wv) Lark/7.10.5 BytedanceWebview/d8a21c6 TTWebView/1",
     "feishu", False),
    ("Mozilla/5.0 (Linux; Android 13; wv) JsSdk/1.0 BytedanceWebview/d8a21c6 ByteLocale/en",
     "web", False),
    ("TikTok 32.5.0 rv:325002 (iPhone; iOS 17.2; en_US) Cronet", "web", False),
    ("Mozilla/5.0 (Linux; Android 13; wv) musical_ly_2023205030 AppName/musical_ly aweme",
     "web", False),
    ("Mozilla/5.0 (Linux; Android 13; wv) Yoda/oversea-3 Kwai_Pro/11.2.40 Kwai/11.2", "web",
     False),
    ("Mozilla/5.0 (Linux; Android 13; wv) Mobile Safari/537.36 Kwai/12.1.20", "kuaishou",
     False),
    # a desktop browser whose name ends in "Discover/" is not Xiaohongshu ("discover/8.40")
    ("Mozilla/5.0 (Windows NT 10.0) Chrome/41.0 Safari/537.36 WebDiscover/1.259.2", "web",
     False),
    # Baidu's encoded device id can end in "QQ/1": still Baidu, not QQ
    ("Mozilla/5.0 (iPhone) Mobile/13D15 baiduboxapp/0_0.0.2.7_enohpi/1099a/CD92FHREROQQ/1",
     "baidu", False),
    # DingTalk's desktop client, Taobao for the iPad
    ("Mozilla/5.0 (Windows NT 10.0) Chrome/91.0 dingtalk-win/1.0.0 DingTalk(6.5.40-Release)",
     "dingtalk", False),
    ("Mozilla/5.0 (iPad; CPU OS 9_1 like Mac OS X) Mobile/13B143 AliApp(TB-PD/5.0.0)",
     "taobao", False),
    # phones a crawler-list pattern names (an Android 15 build, HTC's Butterfly) are people
    ("Mozilla/5.0 (Linux; U; Android 15; PKB110 Build/AP3A.240617.008) Quark/7.9.7 Mobile",
     "web", False),
    ("Mozilla/5.0 (Linux; Android 15; RMX3946 Build/AP3A.240617.008; wv) baiduboxapp/15.8",
     "baidu", False),
    ("Mozilla/5.0 (Linux; Android 4.4.2; HTCButterflys901s) Chrome/41.0 Mobile Safari/537.36",
     "web", False),
    ("Mozilla/5.0 (Linux; Android 8.1.0; Fever_Plus_J) Chrome/95.0 Safari/537.36", "web",
     False),
    ("Mozilla/5.0 (Linux; Android 8.0.0; Expanse) Chrome/86.0 Mobile Safari/537.36", "web",
     False),
    ("DESAY TS1008/1.0 Release/07.12.2013 Mozilla/5.0 (Linux; U; Android 4.0.3) Mobile",
     "web", False),
    # a whole header lower-cased by a proxy still detects
    ("mozilla/5.0 (windows nt 10.0) nettype/wifi micromessenger/7.0.20 windowswechat",
     "wechat", False),
    ("MOZILLA/5.0 (LINUX; ANDROID 13) BAIDUBOXAPP/13.50.0.10", "baidu", False),
]


@pytest.mark.parametrize(("ua", "platform", "bot"), PITFALLS)
def test_pitfalls(ua: str, platform: str, bot: bool) -> None:
    found = detect_user_agent(ua)
    assert (found.platform, found.bot) == (platform, bot)


OS_MOBILE = [
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148", "ios", True),
    ("Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) Mobile/15E148", "ios", True),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36", "android",
     True),
    ("Mozilla/5.0 (Phone; OpenHarmony 5.0) Chrome/114.0 ArkWeb/4.1.6.1 Mobile", "harmonyos",
     True),
    ("Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00) Mobile Safari/537.36", "harmonyos",
     True),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36", "windows", False),
    ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Lumia 950) Mobile Edge/15", "windows",
     True),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15", "macos", False),
    ("Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0", "linux", False),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) Chrome/120.0", "linux", False),
    ("Dalvik/2.1.0 (Linux; U; Android 13; MI 11) NewsArticle/9.6.4", "android", True),
    ("WeChat/8.0.47 CFNetwork/1410.0.3 Darwin/22.6.0", "other", False),
    # a Huawei laptop on HarmonyOS NEXT is not a handheld; feature phones are
    ("Mozilla/5.0 (PC; OpenHarmony 5.0; HarmonyOS 5.0) Chrome/114.0 ArkWeb/4.1.6.1",
     "harmonyos", False),
    ("JUC (Linux; U; 2.3.5; zh-cn; GT-I9100; 480*800) UCWEB7.9.0.94/139/800", "linux", True),
    ("BlackBerry9700/6.6.0.124 Profile/MIDP-2.0 Configuration/CLDC-1.1", "other", True),
]


@pytest.mark.parametrize(("ua", "os", "mobile"), OS_MOBILE)
def test_os_and_mobile(ua: str, os: str, mobile: bool) -> None:
    found = detect_user_agent(ua)
    assert (found.os, found.mobile) == (os, mobile)


def test_ten_thousand_distinct_user_agents_each_detected_as_their_app() -> None:
    # How fast uncached detection is belongs to the benchmark (bench/run.py --unique-ua);
    # here, that a build suffix on a known User-Agent never changes what it is.
    pool = [r[1] for r in ROWS] or [s for a in ADAPTERS for s in a.ua_samples]
    for i in range(10_000):
        base = pool[i % len(pool)]
        assert detect_user_agent(f"{base} x/{i}") == detect_user_agent(base), base


def test_as_json_is_the_cli_shape() -> None:
    found = detect_user_agent("Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(TB/10.30.0)")
    assert found.as_json() == {"platform": "taobao", "bot": False, "mobile": True, "os": "ios"}


def test_detector_caches() -> None:
    detector = Detector(cache_size=2)
    first = detector.user_agent("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47")
    assert detector.user_agent("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47") \
        is first
    for i in range(5):  # bounded: old entries go, answers stay right
        detector.user_agent(f"Mozilla/5.0 (Windows NT 10.0) Chrome/{i}")
    assert detector.user_agent("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47") \
        == first


BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148 Safari/604.1"
WECHAT = "Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

FALLBACKS = [
    # (ua, channel, referer, merchant channels, platform, source)
    (WECHAT, "douyin", "https://www.douyin.com/", (), "wechat", "ua"),  # the UA wins
    (BROWSER, None, None, (), "web", "none"),
    (BROWSER, "douyin", None, (), "douyin", "channel"),
    (BROWSER, "XiaoHongShu", None, (), "xiaohongshu", "channel"),
    (BROWSER, "douyin", "https://weibo.com/x", (), "douyin", "channel"),  # channel before referer
    (BROWSER, "tiktok", None, (), "web", "none"),  # unknown channel: ignored
    (BROWSER, "x" * 200, None, (), "web", "none"),
    (BROWSER, "spring_sale", None, ("spring_sale",), "web", "channel"),
    (BROWSER, "spring_sale", "https://m.weibo.cn/status/1", ("spring_sale",), "weibo", "referer"),
    (BROWSER, "spring_sale", None, (), "web", "none"),  # not this merchant's channel
    (BROWSER, None, "https://v.douyin.com/AbC/", (), "douyin", "referer"),
    (BROWSER, None, "https://work.weixin.qq.com/ca/x", (), "wecom", "referer"),
    (BROWSER, None, "https://mp.weixin.qq.com/s/x", (), "wechat", "referer"),
    (BROWSER, None, "https://servicewechat.com/wx0123456789abcdef/1/page-frame.html", (),
     "wechat_miniprogram", "referer"),
    (BROWSER, None, "https://M.TAOBAO.COM./", (), "taobao", "referer"),
    (BROWSER, None, "https://nottaobao.com/", (), "web", "none"),
    (BROWSER, None, "https://taobao.com.evil.example/", (), "web", "none"),
    (BROWSER, None, "android-app://com.tencent.mm/", (), "web", "none"),
    (BROWSER, None, "http://[::1/", (), "web", "none"),  # malformed: ignored
    (BROWSER, None, "not a url", (), "web", "none"),
    (BOT, "douyin", None, (), "douyin", "channel"),  # a bot is attributed and stays a bot
]


@pytest.mark.parametrize(("ua", "channel", "referer", "channels", "platform", "source"),
                         FALLBACKS)
def test_request_fallbacks(ua: str, channel: str | None, referer: str | None,
                           channels: tuple[str, ...], platform: str, source: str) -> None:
    found = Detector().request(ua, channel, referer, frozenset(channels))
    assert isinstance(found, Detection)
    assert (found.platform, found.source) == (platform, source)
    base = detect_user_agent(ua)
    assert (found.bot, found.mobile, found.os) == (base.bot, base.mobile, base.os)


def test_request_without_merchant_channels() -> None:
    found = Detector().request(BROWSER, "kuaishou", None)
    assert (found.platform, found.source) == ("kuaishou", "channel")


# --- bots from the crawler-user-agents list, and what no person's browser sends -----------
HELD_OUT = DATA / "ua" / "heldout-crawlers.txt"
BROWSERS = DATA / "ua" / "browsers.tsv"


def test_held_out_crawlers_are_flagged() -> None:
    """Real bot User-Agents from a test suite the rules were never tuned on
    (JayBizzle/Crawler-Detect's crawler fixtures): at least 90% flagged. The corpus's
    own bot rows, and extra.tsv's, are left out (those were seen)."""
    seen = {ua for _label, ua, _source in ROWS + EXTRA_ROWS}
    lines = HELD_OUT.read_text(encoding="utf-8").splitlines()
    agents = [ua for ua in dict.fromkeys(lines[1:]) if ua.strip() and ua not in seen]
    assert len(agents) > 3000
    flagged = sum(detect_user_agent(ua).bot for ua in agents)
    assert flagged / len(agents) >= 0.90, f"{flagged} of {len(agents)}"


def test_browsers_a_crawler_pattern_names_stay_browsers() -> None:
    """Real browsers whose User-Agent a crawler-user-agents pattern also matches (Sogou's
    browser, ViewSonic tablets, Fluid): people, not bots."""
    with BROWSERS.open(encoding="utf-8", newline="") as handle:
        agents = [r["user_agent"] for r in csv.DictReader(handle, delimiter="\t")]
    assert len(agents) >= 5
    for ua in agents:
        assert not detect_user_agent(ua).bot, ua


@pytest.mark.parametrize(("ua", "platform", "bot"), [
    # A listed crawler's name in an app's User-Agent does not make the app a bot...
    ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 heritrix/3.1", "wechat", False),
    # ... and alone it does.
    ("Mozilla/5.0 (compatible; heritrix/3.1)", "web", True),
    # A URL or an e-mail to contact the owner: an automated client.
    ("Mozilla/5.0 (compatible; Dataprovider/6.92; +https://www.dataprovider.com/)", "web",
     True),
    ("support@domainreanimator.com", "web", True),
    # No operating system, device or browser named at all: a script, not a person.
    ("ApacheBench/2.3", "web", True),
    ("Amazon-Route53-Health-Check-Service (ref b0eb04d5)", "web", True),
    # A bare "Mozilla/5.0" names no browser: scanners and fetchers write themselves so.
    ("Mozilla/5.0 (compatible; FormFinder/1.0)", "web", True),
    ("Mozilla/5.0 (Exchange check)", "web", True),
    # Checkers, monitors (监控, "jiankong") and Google's fetchers that name no bot.
    ("Mozilla/5.0 (Windows NT 10.0) Chrome/144.0 Safari/537.36 ProxyChecker/2.0", "web", True),
    ("Mozilla/5.0 (Windows; U; Windows NT 6.0) Firefox/99.0 YottaaMonitor", "web", True),
    ("Mozilla/5.0 (compatible; MSIE 7.0; Windows NT 5.1) 360JK yunjiankong 4276", "web",
     True),
    ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Chrome/41.0 Mobile Safari/537.36 "
     "(compatible; Google-AMPHTML)", "web", True),
    ("Mozilla/5.0 (Linux; Android 8.0; Pixel 2; DuplexWeb-Google/1.0) Chrome/74.0 Mobile "
     "Safari/537.36", "web", True),
    # ... but those words, which an app's own name may hold, never make an app a bot.
    ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 HealthMonitor/2.1", "wechat",
     False),
    ("Mozilla/5.0 (Linux; Android 13) AliApp(TB/10.30.0) PriceChecker/1.0", "taobao", False),
    # A browser named by its engine or an old platform alone is still a person.
    ("Mozilla/3.0 (compatible; NetPositive/2.2.1; BeOS)", "web", False),
    ("Mozilla/5.0 (QtEmbedded; U) AppleWebKit/533.3 (KHTML, like Gecko)", "web", False),
    # A browser on a named device, however unusual, is a person.
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile "
     "Safari/537.36", "web", False),
    ("Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) "
     "Presto/2.5.25 Version/10.54", "web", False),
])
def test_listed_and_unlike_a_person(ua: str, platform: str, bot: bool) -> None:
    found = detect_user_agent(ua)
    assert (found.platform, found.bot) == (platform, bot)
