"""Resolution policy: every app x a product on eight platforms, and the edge cases."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import pytest

from adapters import ADAPTERS, Adapter, Storefront, by_platform
from gateway.detect import Detection, Detector, detect_user_agent
from gateway.resolve import RULES, Resolution, hop, hop_url, resolve, storefronts

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
    offered = [*result.options, *result.blocked, *result.phone_only,
               *([result.card] if result.card else [])]
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
        # No redirect: the card's platform, or none.
        assert result.target == (result.card.platform if result.card else None)
        assert result.guide == bool(result.blocked)
    if not detection.mobile:
        assert result.redirect is None and result.qr


EXPECTED = {
    # who: (reason, target, options in order); WeChat's mini-program is the page's card.
    "wechat": ("miniprogram_page", "wechat_miniprogram", ["jd", "pinduoduo", "web"]),
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


# --- mini-programs: what each app and OS gets, by the rule its platform documents ----------------
# One phone User-Agent per app and OS (short synthetic fragments; test_phones checks them).
PHONES: dict[str, tuple[str, str]] = {
    "wechat": ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI",
               "Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.44.2502 XWEB/1160065"),
    "wecom": ("Mozilla/5.0 (iPhone) Mobile/15E148 wxwork/4.1.20 MicroMessenger/7.0.1",
              "Mozilla/5.0 (Linux; Android 13; wv) wxwork/4.1.20 MicroMessenger/7.0.1"),
    "wechat_miniprogram": ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 miniProgram",
                           "Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.44 miniProgram/wx0123"),
    "qq": ("Mozilla/5.0 (iPhone) Mobile/15E148 QQ/9.0.20.613 V1_IPH_SQ_9.0.20_1_APP_A",
           "Mozilla/5.0 (Linux; Android 13; wv) V1_AND_SQ_9.0.20_5866_YYB_D QQ/9.0.20.16570"),
    "dingtalk": ("Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(DingTalk/7.5.0)",
                 "Mozilla/5.0 (Linux; Android 13) AliApp(DingTalk/7.5.0)"),
    "feishu": ("Mozilla/5.0 (iPhone) Mobile/15E148 Lark/7.10.5",
               "Mozilla/5.0 (Linux; Android 13; wv) Lark/7.10.5"),
    "alipay": ("Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(AP/10.5.60) AlipayClient/10.5.60",
               "Mozilla/5.0 (Linux; Android 13) AlipayClient/10.5"),
    "tmall": ("Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(TM/15.10.0)",
              "Mozilla/5.0 (Linux; Android 13) AliApp(TM/15.10.0)"),
    "taobao": ("Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(TB/10.30.0)",
               "Mozilla/5.0 (Linux; Android 13) AliApp(TB/10.30.0)"),
    "douyin": ("Mozilla/5.0 (iPhone) Mobile/15E148 aweme_30.1.0 JsSdk/2.0",
               "Mozilla/5.0 (Linux; Android 14; wv) aweme_300100 JsSdk/1.0"),
    "toutiao": ("Mozilla/5.0 (iPhone) Mobile/15E148 NewsArticle/9.6.4",
                "Mozilla/5.0 (Linux; Android 13; wv) NewsArticle/9.6.4"),
    "kuaishou": ("Mozilla/5.0 (iPhone) Mobile/15E148 Kwai/12.1.20.7360",
                 "Mozilla/5.0 (Linux; Android 13; wv) Yoda/3.2.9 KsWebView/1.8.90.733"),
    "jd": ("jdapp;iPhone;13.2.0;;;M/5.0;Mozilla/5.0 (iPhone) Mobile/15E148",
           "jdapp;android;13.2.0;;;Mozilla/5.0 (Linux; Android 13; wv)"),
    "pinduoduo": ("Mozilla/5.0 (iPhone) Mobile/15E148 pddmt_ios_version/7.30.0",
                  "Mozilla/5.0 (Linux; Android 13; wv) phh_android_version/7.30.0"),
    "xiaohongshu": ("Mozilla/5.0 (iPhone) Mobile/15E148 discover/8.30.1 XiaoHongShu",
                    "Mozilla/5.0 (Linux; Android 13; wv) discover/8.30.1 XiaoHongShu"),
    "weibo": ("Mozilla/5.0 (iPhone) Mobile/15E148 Weibo (iPhone15,2__weibo__14.1.0__iphone__os17.2)",
              "Mozilla/5.0 (Linux; Android 13; wv) Weibo (HUAWEI__weibo__14.1.0__android__android13)"),
    "bilibili": ("Mozilla/5.0 (iPhone) Mobile/15E148 BiliApp/77900100",
                 "Mozilla/5.0 (Linux; Android 13; wv) BiliApp/7580300"),
    "baidu": ("Mozilla/5.0 (iPhone) Mobile/15E148 baiduboxapp/13.50.0",
              "Mozilla/5.0 (Linux; Android 13; wv) baiduboxapp/13.50.0"),
    "browser": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148 Safari/604.1",
                "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile Safari/537.36"),
}
DESKTOPS = {"browser": DESKTOP_BROWSER, "wechat": adapter("wechat").ua_samples[2]}


def test_phones_are_who_they_say() -> None:
    assert set(PHONES) == {a.platform for a in ADAPTERS if a.platform != "web"} | {"browser"}
    for who, uas in PHONES.items():
        for ua, os in zip(uas, ("ios", "android"), strict=True):
            found = detect_user_agent(ua)
            assert (found.platform, found.os, found.mobile) == (
                "web" if who == "browser" else who, os, True), ua


PLAIN = MINI_SCHEME
URL_LINK = "https://wxaurl.cn/AbCdEf123"
ENCRYPTED = "weixin://dl/business/?t=AbCdEf123"
MINTED = {"wechat_miniprogram": URL_LINK, "wechat_miniprogram:scheme": ENCRYPTED}
MERCHANT_LINK = "https://wxaurl.cn/ByHand456"
ALIPAY_SCHEME = "alipays://platformapi/startapp?appId=2021000000000001&page=pages/i&query=id%3D1"
ALIPAY_PAGE = "https://ds.alipay.com/?scheme=" + quote(ALIPAY_SCHEME, safe="")
DOUYIN_SCHEME = ("snssdk1128://microapp?app_id=ttb3d2c56f2ce8e78c&version=v2&scene=0"
                 "&start_page=pages%2Fi")
DOUYIN_LINK = "https://z.douyin.com/AbC123"
MINI_TARGETS = {
    "wechat": RAW_TARGETS["wechat_miniprogram"],
    "wechat+url": {**RAW_TARGETS["wechat_miniprogram"], "url": MERCHANT_LINK},
    "alipay": {"appid": "2021000000000001", "page": "pages/i", "query": "id=1"},
    "douyin": {"appid": "ttb3d2c56f2ce8e78c", "path": "pages/i"},
    "douyin+url": {"appid": "ttb3d2c56f2ce8e78c", "path": "pages/i", "url": DOUYIN_LINK},
}
# The apps that have no rule of their own for another platform's mini-program: a blocked
# storefront whose button is the launch page (the app may refuse the scheme; the page says
# how to leave for the browser then).
OTHER_APPS = ("wecom", "qq", "dingtalk", "feishu", "alipay", "tmall", "taobao", "douyin",
              "toutiao", "kuaishou", "jd", "pinduoduo", "xiaohongshu", "weibo", "bilibili",
              "baidu")

# (target, minted links, who, os) -> (what the share link gives, the rule that decides it).
# Outcomes: "redirect:URL" (302), "launch:SCHEME" (the launch page), "page" (WeChat's
# landing page with the mini-program card), "try:launch:SCHEME" (landing page, the app
# blocks it, its button is the launch page), "guide" (landing page with the guide, nothing
# worth trying in the app), "qr" (desktop: the share link's QR code), "web:URL" (desktop: a
# web button).
MATRIX: dict[tuple[str, bool, str, str], tuple[str, str]] = {
    # WeChat mini-program, nothing minted (no credentials): the plain-text scheme outside WeChat.
    ("wechat", False, "wechat", "ios"): ("page", "page_in_wechat"),
    ("wechat", False, "wechat", "android"): ("page", "page_in_wechat"),
    ("wechat", False, "wechat", "desktop"): ("qr", "phone_only"),
    ("wechat", False, "wechat_miniprogram", "ios"): ("guide", "no_scheme_in_web_view"),
    ("wechat", False, "wechat_miniprogram", "android"): ("guide", "no_scheme_in_web_view"),
    ("wechat", False, "browser", "ios"): ("redirect:" + PLAIN, "scheme_ios_browser"),
    ("wechat", False, "browser", "android"): ("launch:" + PLAIN, "launch_page"),
    ("wechat", False, "browser", "desktop"): ("qr", "phone_only"),
    **{("wechat", False, app, os): ("try:launch:" + PLAIN, "launch_page")
       for app in OTHER_APPS for os in ("ios", "android")},
    # WeChat mini-program with credentials: a URL Link inside WeChat, the encrypted scheme
    # outside it.
    ("wechat", True, "wechat", "ios"): ("redirect:" + URL_LINK, "url_link_in_wechat"),
    ("wechat", True, "wechat", "android"): ("redirect:" + URL_LINK, "url_link_in_wechat"),
    ("wechat", True, "wechat", "desktop"): ("web:" + URL_LINK, "phone_only"),
    ("wechat", True, "wechat_miniprogram", "ios"): ("guide", "no_scheme_in_web_view"),
    ("wechat", True, "wechat_miniprogram", "android"): ("guide", "no_scheme_in_web_view"),
    ("wechat", True, "browser", "ios"): ("redirect:" + ENCRYPTED, "scheme_ios_browser"),
    ("wechat", True, "browser", "android"): ("launch:" + ENCRYPTED, "launch_page"),
    ("wechat", True, "browser", "desktop"): ("web:" + URL_LINK, "phone_only"),
    **{("wechat", True, app, os): ("try:launch:" + ENCRYPTED, "launch_page")
       for app in OTHER_APPS for os in ("ios", "android")},
    # A URL Link the merchant minted by hand: WeChat's own page everywhere outside WeChat too.
    ("wechat+url", False, "wechat", "ios"): ("redirect:" + MERCHANT_LINK, "url_link_in_wechat"),
    ("wechat+url", False, "wechat", "android"): ("redirect:" + MERCHANT_LINK,
                                                 "url_link_in_wechat"),
    ("wechat+url", False, "browser", "ios"): ("redirect:" + MERCHANT_LINK,
                                              "url_link_outside_wechat"),
    ("wechat+url", False, "browser", "android"): ("redirect:" + MERCHANT_LINK,
                                                  "url_link_outside_wechat"),
    ("wechat+url", False, "browser", "desktop"): ("web:" + MERCHANT_LINK, "phone_only"),
    # Alipay mini-program: its scheme inside Alipay, Alipay's own https page elsewhere.
    ("alipay", False, "alipay", "ios"): ("redirect:" + ALIPAY_SCHEME, "own_scheme_in_app"),
    ("alipay", False, "alipay", "android"): ("redirect:" + ALIPAY_SCHEME, "own_scheme_in_app"),
    ("alipay", False, "browser", "ios"): ("redirect:" + ALIPAY_PAGE, "platform_https_page"),
    ("alipay", False, "browser", "android"): ("redirect:" + ALIPAY_PAGE, "platform_https_page"),
    ("alipay", False, "browser", "desktop"): ("qr", "phone_only"),
    ("alipay", False, "wechat", "ios"): ("guide", "platform_https_page"),
    ("alipay", False, "wechat", "android"): ("guide", "platform_https_page"),
    ("alipay", False, "weibo", "ios"): ("guide", "platform_https_page"),
    ("alipay", False, "weibo", "android"): ("guide", "platform_https_page"),
    # Douyin mini-program: the Link Douyin documents when the merchant has one...
    ("douyin+url", False, "douyin", "ios"): ("redirect:" + DOUYIN_LINK, "platform_https_page"),
    ("douyin+url", False, "douyin", "android"): ("redirect:" + DOUYIN_LINK,
                                                 "platform_https_page"),
    ("douyin+url", False, "browser", "ios"): ("redirect:" + DOUYIN_LINK, "platform_https_page"),
    ("douyin+url", False, "browser", "android"): ("redirect:" + DOUYIN_LINK,
                                                  "platform_https_page"),
    ("douyin+url", False, "browser", "desktop"): ("web:" + DOUYIN_LINK, "phone_only"),
    ("douyin+url", False, "wechat", "ios"): ("guide", "platform_https_page"),
    # ...else Douyin's own (undocumented) scheme: inside Douyin, and from a phone browser.
    ("douyin", False, "douyin", "ios"): ("redirect:" + DOUYIN_SCHEME, "own_scheme_in_app"),
    ("douyin", False, "douyin", "android"): ("redirect:" + DOUYIN_SCHEME, "own_scheme_in_app"),
    ("douyin", False, "browser", "ios"): ("redirect:" + DOUYIN_SCHEME, "scheme_ios_browser"),
    ("douyin", False, "browser", "android"): ("launch:" + DOUYIN_SCHEME, "launch_page"),
    ("douyin", False, "browser", "desktop"): ("qr", "phone_only"),
    ("douyin", False, "wechat", "ios"): ("try:launch:" + DOUYIN_SCHEME, "launch_page"),
    ("douyin", False, "wechat", "android"): ("try:launch:" + DOUYIN_SCHEME, "launch_page"),
}


def _who(who: str, os: str) -> Detection:
    ua = DESKTOPS[who] if os == "desktop" else PHONES[who][os == "android"]
    return detect_user_agent(ua)


def _outcome(detection: Detection, platform: str, targets: dict[str, dict[str, str]],
             links: dict[str, str] | None) -> tuple[str, str | None]:
    """What the share link of a product with only this mini-program gives, and why."""
    result = resolve(detection, targets, links=links)
    front = storefronts(targets)[0]
    way = hop(detection, front, links=links)
    if not detection.mobile:
        assert result.redirect is None and result.qr
        if result.phone_only:
            return "qr", "phone_only"
        assert way is not None and way.kind == "redirect" and result.options == (front,)
        return f"web:{way.url}", "phone_only"
    if result.redirect is not None:
        assert way is not None and (way.kind, way.url) == ("redirect", result.redirect)
        return f"redirect:{result.redirect}", result.rule
    if result.launch is not None:
        assert way is not None and (way.kind, way.url) == ("launch", result.launch)
        return f"launch:{result.launch}", result.rule
    if result.card is not None:
        assert way is not None and way.kind == "page" and result.card == front
        return "page", result.rule
    assert result.blocked == (front,) and result.guide
    if way is None:
        return "guide", "no_scheme_in_web_view"
    if platform in result.tryable:
        assert way.kind == "launch"
        return f"try:launch:{way.url}", way.rule
    assert way.kind == "redirect"
    return "guide", way.rule


@pytest.mark.parametrize(("case", "expected"), list(MATRIX.items()),
                         ids=["-".join(map(str, k)) for k in MATRIX])
def test_mini_program_matrix(case: tuple[str, bool, str, str],
                             expected: tuple[str, str]) -> None:
    kind, minted, who, os = case
    platform = {"wechat": "wechat_miniprogram"}.get(kind.split("+")[0], kind.split("+")[0])
    product = targets(**{platform: MINI_TARGETS[kind]})
    detection = _who(who, os)
    outcome, rule = _outcome(detection, platform, product, MINTED if minted else None)
    assert (outcome, rule) == expected
    assert rule in RULES, f"{rule} cites no documented rule"


def test_matrix_covers_every_app_and_os_for_the_wechat_mini_program() -> None:
    for minted in (False, True):
        for who in PHONES:
            for os in ("ios", "android"):
                assert ("wechat", minted, who, os) in MATRIX, (who, os, minted)
        for who in DESKTOPS:
            assert ("wechat", minted, who, "desktop") in MATRIX


def test_inside_wechat_never_a_weixin_redirect() -> None:
    """The documented rule the old gateway broke: URL Schemes open mini-programs only from
    outside WeChat. Whatever was minted, whatever the product holds."""
    products = [PRODUCT, *(targets(**{"wechat_miniprogram": MINI_TARGETS[k]})
                           for k in ("wechat", "wechat+url"))]
    for ua in (*PHONES["wechat"], *PHONES["wecom"], *PHONES["wechat_miniprogram"]):
        detection = detect_user_agent(ua)
        for product in products:
            for links in (None, MINTED, {"wechat_miniprogram:scheme": ENCRYPTED}):
                result = resolve(detection, product, links=links)
                assert not (result.redirect or "").startswith("weixin:"), (ua, result)
                if detection.platform == "wechat":
                    for front in storefronts(product):
                        way = hop(detection, front, links=links)
                        assert way is None or not (way.url or "").startswith("weixin:")


def test_minted_links_are_checked_before_use() -> None:
    wechat = detect_user_agent(adapter("wechat").ua_samples[0])
    assert resolve(wechat, PRODUCT, links=MINTED).redirect == URL_LINK
    # A minted link off the platform's hosts, or a "scheme" that is not WeChat's encrypted
    # form, is never followed: the no-open-redirect rule holds for minted links too.
    for bad in ("https://evil.example.com/x", "http://wxaurl.cn/x", "javascript:alert(1)"):
        result = resolve(wechat, PRODUCT, links={"wechat_miniprogram": bad})
        assert result.redirect is None and result.card is not None
    assert resolve(wechat, PRODUCT, links={"web": "https://evil.example.com/"}).redirect is None
    iphone = detect_user_agent(MOBILE_BROWSER)
    front = FRONTS["wechat_miniprogram"]
    for bad in ("weixin://dl/business/?t=x&appid=evil", "javascript:alert(1)",
                "weixin://dl/business/?appid=wx0123456789abcdef&path=p"):
        assert hop_url(iphone, front, links={"wechat_miniprogram:scheme": bad}) == PLAIN


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
    in_mini_program = detect_user_agent(adapter("wechat_miniprogram").ua_samples[0])
    assert hop_url(in_mini_program, FRONTS["wechat_miniprogram"]) is None
    douyin = detect_user_agent(adapter("douyin").ua_samples[0])
    assert hop_url(douyin, FRONTS["taobao"]) == FRONTS["taobao"].web_url


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
    # A mini-program alone: an iPhone goes to its scheme, an Android phone to the launch page.
    only_mini = targets(wechat_miniprogram=RAW_TARGETS["wechat_miniprogram"])
    mini = resolve(browser, only_mini)
    assert (mini.redirect, mini.reason) == (MINI_SCHEME, "single_choice")
    android = resolve(detect_user_agent(PHONES["browser"][1]), only_mini)
    assert (android.redirect, android.launch, android.reason) == (None, MINI_SCHEME, "launch")


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
