"""Resolution policy: every app x a product on eight platforms, and the edge cases."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from adapters import ADAPTERS, Adapter, Storefront, by_platform
from gateway.detect import Detection, Detector, detect_user_agent
from gateway.resolve import Resolution, hop_url, resolve, storefronts

DOMAINS = ("shop.example.com",)
RAW_TARGETS = {
    "taobao": {"item_id": "600000000001", "share_token": "￥AbC123￥"},
    "jd": {"sku": "100012043978"},
    "douyin": {"product_id": "3578430953573501732"},
    "pinduoduo": {"goods_id": "300000000001"},
    "xiaohongshu": {"item_id": "64a0000000000000000000a1"},
    "kuaishou": {"item_id": "20000000001"},
    "wechat_miniprogram": {"appid": "wx0123456789abcdef", "path": "pages/item/index",
                           "query": "id=42"},
    "web": {"url": "https://shop.example.com/tea"},
}
MINI_SCHEME = "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index&query=id%3D42"
MOBILE_BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148 Safari/604.1"
DESKTOP_BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def adapter(platform: str) -> Adapter:
    found = by_platform(platform)
    assert found is not None
    return found


def targets(**raw: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {p: adapter(p).validate_target(t, web_domains=DOMAINS) for p, t in raw.items()}


PRODUCT = targets(**RAW_TARGETS)
FRONTS = {f.platform: f for f in storefronts(PRODUCT)}

# Every app the contract names (its first sample UA, a phone), plus both kinds of browser.
SHOPPERS = [(a.platform, a.ua_samples[0]) for a in ADAPTERS if a.platform != "web"]
SHOPPERS += [("mobile_browser", MOBILE_BROWSER), ("desktop_browser", DESKTOP_BROWSER)]


def _environment(detection: Detection) -> Adapter:
    return adapter(detection.platform if detection.source == "ua" else "web")


def _is_scheme(url: str) -> bool:
    return not url.startswith("https://")


@pytest.mark.parametrize(("who", "ua"), SHOPPERS, ids=[s[0] for s in SHOPPERS])
def test_matrix_shopper_gets_only_what_their_app_opens(who: str, ua: str) -> None:
    detection = detect_user_agent(ua)
    env = _environment(detection)
    if who in ("mobile_browser", "desktop_browser"):
        assert env.platform == "web"
        assert detection.mobile == (who == "mobile_browser")
    else:
        assert env.platform == who and detection.mobile
    result = resolve(detection, PRODUCT)
    offered = [*result.options, *result.blocked, *result.phone_only]
    assert sorted(f.platform for f in offered) == sorted(FRONTS), "every storefront is shown"
    assert len(offered) == len(set(offered))
    for front in result.options:
        assert front.platform in env.opens, f"{who} is offered {front.platform}"
        url = hop_url(detection, front)
        assert url is not None, f"{who} option {front.platform} has no usable link"
        if not detection.mobile:
            assert not _is_scheme(url), "never an app scheme on a desktop"
        elif env.platform != "web" and _is_scheme(url):
            # From inside an app only the app's own (or its mini-program's) scheme works.
            assert front.platform in (env.platform, env.miniprogram_platform)
    for front in result.blocked:
        assert env.platform != "web" or not detection.mobile
        assert front.platform not in env.opens
    if result.redirect is not None:
        assert detection.mobile
        chosen = FRONTS[result.target or ""]
        assert chosen.platform in env.opens
        assert result.redirect in (chosen.web_url, chosen.app_url)
        assert result.redirect == hop_url(detection, chosen)
    else:
        assert result.target is None
        assert result.guide == bool(result.blocked)
    if not detection.mobile:
        assert result.redirect is None and result.qr


EXPECTED = {
    # who: (reason, redirect target or None, options in order)
    "wechat": ("miniprogram", "wechat_miniprogram",
               ["wechat_miniprogram", "jd", "pinduoduo", "web"]),
    "wecom": ("blocked", None, ["jd", "pinduoduo", "web"]),
    "wechat_miniprogram": ("blocked", None, ["web"]),
    "qq": ("blocked", None, ["jd", "pinduoduo", "web"]),
    "taobao": ("own_platform", "taobao", ["taobao"]),
    "tmall": ("blocked", None, ["taobao"]),
    "alipay": ("blocked", None, ["taobao"]),
    "jd": ("own_platform", "jd", ["jd", "web"]),
    "pinduoduo": ("own_platform", "pinduoduo", ["pinduoduo"]),
    "douyin": ("own_platform", "douyin", ["douyin"]),
    "toutiao": ("blocked", None, ["douyin", "web"]),
    "kuaishou": ("own_platform", "kuaishou", ["kuaishou"]),
    "xiaohongshu": ("own_platform", "xiaohongshu", ["xiaohongshu"]),
    "weibo": ("blocked", None, ["taobao", "jd", "web"]),
    "dingtalk": ("blocked", None, ["taobao", "jd", "pinduoduo", "web"]),
    "feishu": ("blocked", None, ["taobao", "jd", "pinduoduo", "web"]),
    "bilibili": ("blocked", None, ["taobao", "jd", "pinduoduo", "web"]),
    "baidu": ("blocked", None, ["taobao", "jd", "pinduoduo", "web"]),
    "mobile_browser": ("choose", None, ["wechat_miniprogram", "taobao", "douyin", "kuaishou",
                                        "jd", "pinduoduo", "xiaohongshu", "web"]),
    "desktop_browser": ("desktop", None, ["taobao", "douyin", "kuaishou", "jd", "pinduoduo",
                                          "xiaohongshu", "web"]),
}


@pytest.mark.parametrize(("who", "ua"), SHOPPERS, ids=[s[0] for s in SHOPPERS])
def test_matrix_expected_outcome(who: str, ua: str) -> None:
    result = resolve(detect_user_agent(ua), PRODUCT)
    reason, target, options = EXPECTED[who]
    assert (result.reason, result.target) == (reason, target)
    assert [f.platform for f in result.options] == options


def test_wechat_goes_to_the_mini_program_by_plain_text_scheme() -> None:
    result = resolve(detect_user_agent(adapter("wechat").ua_samples[0]), PRODUCT)
    assert result.redirect == MINI_SCHEME


def test_minted_url_link_replaces_the_scheme() -> None:
    wechat = detect_user_agent(adapter("wechat").ua_samples[0])
    link = "https://wxaurl.cn/AbCdEf123"
    result = resolve(wechat, PRODUCT, links={"wechat_miniprogram": link})
    assert result.redirect == link
    assert hop_url(wechat, FRONTS["wechat_miniprogram"], links={"wechat_miniprogram": link}) \
        == link
    # A minted link off the platform's hosts is never followed.
    for bad in ("https://evil.example.com/x", "http://wxaurl.cn/x", "javascript:alert(1)"):
        result = resolve(wechat, PRODUCT, links={"wechat_miniprogram": bad})
        assert result.redirect == MINI_SCHEME
    assert resolve(wechat, PRODUCT, links={"web": "https://evil.example.com/"}).redirect \
        == MINI_SCHEME


def test_merchant_url_link_is_the_mini_program_web_url() -> None:
    product = targets(wechat_miniprogram={"appid": "wx0123456789abcdef", "path": "p/i",
                                          "url": "https://wxaurl.cn/AbC"})
    wechat = detect_user_agent(adapter("wechat").ua_samples[0])
    assert resolve(wechat, product).redirect == "https://wxaurl.cn/AbC"
    desktop = resolve(detect_user_agent(DESKTOP_BROWSER), product)
    assert [f.platform for f in desktop.options] == ["wechat_miniprogram"]
    assert desktop.phone_only == ()


@pytest.mark.parametrize(("who", "raw", "redirect"), [
    ("alipay", {"alipay": {"appid": "2021000000000001", "page": "pages/i", "query": "id=1"}},
     "alipays://platformapi/startapp?appId=2021000000000001&page=pages/i&query=id%3D1"),
    ("douyin", {"douyin": {"appid": "ttb3d2c56f2ce8e78c", "path": "pages/i"}},
     "snssdk1128://microapp?app_id=ttb3d2c56f2ce8e78c&version=v2&scene=0"
     "&start_page=pages%2Fi"),
    ("douyin", {"douyin": {"product_id": "3578430953573501732"}, "taobao": {"item_id": "12345"}},
     "https://haohuo.jinritemai.com/views/product/detail?id=3578430953573501732"),
    ("tmall", {"tmall": {"item_id": "600000000002"}, "taobao": {"item_id": "600000000001"}},
     "https://detail.tmall.com/item.htm?id=600000000002"),
])
def test_own_mini_programs_and_shops_by_their_own_links(who: str, raw: dict[str, dict[str, str]],
                                                         redirect: str) -> None:
    result = resolve(detect_user_agent(adapter(who).ua_samples[0]), targets(**raw))
    assert (result.redirect, result.reason) == (redirect, "own_platform")


def test_blocked_target_gets_the_guide_with_share_token() -> None:
    product = targets(taobao={"item_id": "600000000001", "share_token": "￥AbC123￥"},
                      jd={"sku": "100012043978"})
    wechat = detect_user_agent(adapter("wechat").ua_samples[0])
    result = resolve(wechat, product)
    assert result.redirect is None and result.guide and result.reason == "blocked"
    assert [f.platform for f in result.options] == ["jd"]
    assert [(f.platform, f.share_token) for f in result.blocked] == [("taobao", "￥AbC123￥")]
    # The hop to a blocked storefront goes to its web page, never another app's scheme.
    assert hop_url(wechat, result.blocked[0]) == "https://item.taobao.com/item.htm?id=600000000001"


def test_app_only_blocked_storefront_has_no_hop_inside_the_app() -> None:
    douyin = detect_user_agent(adapter("douyin").ua_samples[0])
    assert hop_url(douyin, FRONTS["wechat_miniprogram"]) is None
    in_mini_program = detect_user_agent(adapter("wechat_miniprogram").ua_samples[0])
    assert hop_url(in_mini_program, FRONTS["wechat_miniprogram"]) is None
    assert hop_url(detect_user_agent(MOBILE_BROWSER), FRONTS["wechat_miniprogram"]) == MINI_SCHEME


def test_desktop_never_gets_an_app_scheme() -> None:
    desktop = detect_user_agent(DESKTOP_BROWSER)
    result = resolve(desktop, PRODUCT)
    assert result.redirect is None and result.qr and not result.guide
    assert [f.platform for f in result.phone_only] == ["wechat_miniprogram"]
    for front in FRONTS.values():
        url = hop_url(desktop, front)
        assert url is None or url.startswith("https://")
    assert hop_url(desktop, FRONTS["wechat_miniprogram"]) is None
    # Even a single storefront: the desktop shopper gets the page.
    only = resolve(desktop, targets(taobao={"item_id": "600000000001"}))
    assert only.redirect is None and only.reason == "desktop"


def test_desktop_app_blocks_like_the_phone_app() -> None:
    wechat_pc = detect_user_agent(adapter("wechat").ua_samples[2])
    assert wechat_pc.platform == "wechat" and not wechat_pc.mobile
    result = resolve(wechat_pc, PRODUCT)
    assert result.redirect is None and result.guide
    assert {f.platform for f in result.options} == {"jd", "pinduoduo", "web"}
    assert "taobao" in {f.platform for f in result.blocked}


def test_bots_never_redirect() -> None:
    bot = detect_user_agent(BOT)
    for product in (PRODUCT, targets(taobao={"item_id": "600000000001"}),
                    targets(web={"url": "https://shop.example.com/"})):
        result = resolve(bot, product)
        assert result.redirect is None and result.reason == "bot" and not result.qr
    channelled = Detector().request(BOT, "taobao", None)
    assert channelled.bot
    assert resolve(channelled, targets(taobao={"item_id": "600000000001"})).redirect is None
    for front in FRONTS.values():
        url = hop_url(bot, front)
        assert url is None or url.startswith("https://")


def test_mobile_browser_redirects_only_on_one_sensible_web_choice() -> None:
    browser = detect_user_agent(MOBILE_BROWSER)
    single = resolve(browser, targets(jd={"sku": "100012043978"}))
    assert (single.redirect, single.reason, single.target) == (
        "https://item.m.jd.com/product/100012043978.html", "single_choice", "jd")
    two = resolve(browser, targets(jd={"sku": "100012043978"},
                                   web={"url": "https://shop.example.com/"}))
    assert two.redirect is None and two.reason == "choose" and not two.guide
    # An app-only storefront is not a web storefront: the page, with the scheme as a button.
    mini = resolve(browser, targets(wechat_miniprogram=RAW_TARGETS["wechat_miniprogram"]))
    assert mini.redirect is None
    assert [f.platform for f in mini.options] == ["wechat_miniprogram"]
    assert hop_url(browser, mini.options[0]) == MINI_SCHEME


def test_channel_names_the_sensible_choice_in_a_browser() -> None:
    detector = Detector()
    from_douyin = detector.request(MOBILE_BROWSER, "douyin", None)
    result = resolve(from_douyin, PRODUCT)
    assert (result.target, result.reason) == ("douyin", "single_choice")
    assert result.redirect == FRONTS["douyin"].web_url
    # A channel is attribution, not capability: no open-in-browser guide in a browser.
    from_alipay = detector.request(MOBILE_BROWSER, "alipay", None)
    landing = resolve(from_alipay, PRODUCT)
    assert landing.redirect is None and not landing.guide and not landing.blocked
    from_referer = detector.request(MOBILE_BROWSER, None, "https://m.tb.cn/h.x")
    assert resolve(from_referer, PRODUCT).target == "taobao"
    desktop = detector.request(DESKTOP_BROWSER, "douyin", None)
    assert resolve(desktop, PRODUCT).redirect is None


def test_no_storefront() -> None:
    result = resolve(detect_user_agent(MOBILE_BROWSER), {})
    assert result == Resolution(redirect=None, reason="no_storefront")
    unknown = resolve(detect_user_agent(MOBILE_BROWSER), {"tiktok": {"id": "1"}})
    assert unknown.reason == "no_storefront"


def test_storefronts_in_registry_order() -> None:
    order = [a.platform for a in ADAPTERS]
    fronts = storefronts(PRODUCT)
    assert [f.platform for f in fronts] == sorted(PRODUCT, key=order.index)
    assert all(isinstance(f, Storefront) for f in fronts)


def test_resolution_defaults_keep_the_original_shape() -> None:
    bare = Resolution(redirect=None)
    assert (bare.options, bare.blocked, bare.guide) == ((), (), False)
    assert (bare.target, bare.reason, bare.phone_only, bare.qr) == (None, "", (), False)
