"""Adapters: target validation, storefront URLs, the registry, and what each app declares."""

from __future__ import annotations

import ast
import csv
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import adapters
from adapters import ADAPTERS, TargetError, by_platform, platform_ids, target_platform_ids
from adapters.base import Adapter, host_is_within

from .conftest import DATA

REPO = Path(__file__).resolve().parents[1]
CORPUS = DATA / "ua" / "corpus.tsv"
MERCHANT_DOMAINS = ("shop.example.com", "example.org")

CONTRACT_IDS = (
    "wechat", "wecom", "wechat_miniprogram", "douyin", "toutiao", "kuaishou", "taobao", "tmall",
    "alipay", "jd", "pinduoduo", "xiaohongshu", "weibo", "qq", "dingtalk", "feishu", "bilibili",
    "baidu", "web",
)
# DESIGN.md's target table: platform -> its required alternatives.
TARGET_TABLE = {
    "taobao": (("item_id",),),
    "tmall": (("item_id",),),
    "jd": (("sku",),),
    "pinduoduo": (("goods_id",),),
    "douyin": (("product_id",), ("appid", "path")),
    "kuaishou": (("item_id",),),
    "xiaohongshu": (("item_id",),),
    "wechat_miniprogram": (("appid", "path"),),
    "alipay": (("appid", "page"),),
    "web": (("url",),),
}
APP_ONLY = ("wechat", "wecom", "toutiao", "weibo", "qq", "dingtalk", "feishu", "bilibili", "baidu")


def adapter(platform: str) -> Adapter:
    found = by_platform(platform)
    assert found is not None, platform
    return found


def validate(platform: str, raw: Any) -> dict[str, str]:
    return adapter(platform).validate_target(raw, web_domains=MERCHANT_DOMAINS)


# --- good targets -> storefront URLs -----------------------------------------------------------
JD_SCHEME = ("openapp.jdmobile://virtual?params=%7B%22category%22%3A%22jump%22%2C%22des%22%3A"
             "%22productDetail%22%2C%22skuId%22%3A%22100012043978%22%7D")
GOOD = [
    ("taobao", {"item_id": "600000000001", "share_token": "￥AbC123￥"},
     "https://item.taobao.com/item.htm?id=600000000001",
     "taobao://item.taobao.com/item.htm?id=600000000001"),
    ("taobao", {"item_id": 600000000001},  # a JSON number is accepted and stored as text
     "https://item.taobao.com/item.htm?id=600000000001",
     "taobao://item.taobao.com/item.htm?id=600000000001"),
    ("tmall", {"item_id": "600000000002"},
     "https://detail.tmall.com/item.htm?id=600000000002",
     "tmall://page.tm/itemDetail?id=600000000002"),
    ("jd", {"sku": "100012043978"}, "https://item.m.jd.com/product/100012043978.html",
     JD_SCHEME),
    ("pinduoduo", {"goods_id": "300000000001"},
     "https://mobile.yangkeduo.com/goods.html?goods_id=300000000001",
     "pinduoduo://com.xunmeng.pinduoduo/goods.html?goods_id=300000000001"),
    ("douyin", {"product_id": "3578430953573501732"},
     "https://haohuo.jinritemai.com/views/product/detail?id=3578430953573501732", None),
    ("douyin", {"appid": "ttb3d2c56f2ce8e78c", "path": "/pages/item/index"},
     None,
     "snssdk1128://microapp?app_id=ttb3d2c56f2ce8e78c&version=v2&scene=0"
     "&start_page=pages%2Fitem%2Findex"),
    ("douyin", {"product_id": "3578430953573501732", "appid": "ttb3d2c56f2ce8e78c",
                "path": "pages/item/index"},
     "https://haohuo.jinritemai.com/views/product/detail?id=3578430953573501732",
     "snssdk1128://microapp?app_id=ttb3d2c56f2ce8e78c&version=v2&scene=0"
     "&start_page=pages%2Fitem%2Findex"),
    ("kuaishou", {"item_id": "20000000001"},
     "https://app.kwaixiaodian.com/merchant/shop/detail?id=20000000001", None),
    ("xiaohongshu", {"item_id": "64a0000000000000000000a1"},
     "https://www.xiaohongshu.com/goods-detail/64a0000000000000000000a1",
     "xhsdiscover://goods_detail/64a0000000000000000000a1"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "pages/item/index"},
     None, "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "/pages/item/index",
                            "query": "?id=42&from=share"},
     None,
     "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index"
     "&query=id%3D42%26from%3Dshare"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "pages/item/index",
                            "url": "https://wxaurl.cn/AbCdEf123"},
     "https://wxaurl.cn/AbCdEf123",
     "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index"),
    ("alipay", {"appid": "2021000000000001", "page": "pages/item/index", "query": "id=42&x=1"},
     None,
     "alipays://platformapi/startapp?appId=2021000000000001&page=pages/item/index"
     "&query=id%3D42%26x%3D1"),
    ("web", {"url": "https://shop.example.com/tea?sku=1"},
     "https://shop.example.com/tea?sku=1", None),
    ("web", {"url": "https://m.example.org/p/1"}, "https://m.example.org/p/1", None),
    # An explicit url on the platform's own hosts replaces the built web URL.
    ("taobao", {"item_id": "600000000001", "url": "https://m.tb.cn/h.AbCdEf"},
     "https://m.tb.cn/h.AbCdEf", "taobao://item.taobao.com/item.htm?id=600000000001"),
    ("jd", {"sku": "100012043978", "url": "https://u.jd.com/AbCdEf"},
     "https://u.jd.com/AbCdEf", JD_SCHEME),
]


@pytest.mark.parametrize(("platform", "raw", "web_url", "app_url"), GOOD,
                         ids=[f"{g[0]}-{i}" for i, g in enumerate(GOOD)])
def test_storefront_urls(platform: str, raw: dict[str, Any], web_url: str | None,
                         app_url: str | None) -> None:
    target = validate(platform, raw)
    front = adapter(platform).storefront(target)
    assert front.platform == platform
    assert front.label == adapter(platform).label
    assert front.web_url == web_url
    assert front.app_url == app_url
    assert front.share_token == target.get("share_token")
    # Every web URL is https on the platform's own hosts (the merchant's for web).
    if front.web_url:
        parts = urlsplit(front.web_url)
        assert parts.scheme == "https"
        hosts = MERCHANT_DOMAINS if platform == "web" else adapter(platform).owned_hosts
        assert parts.hostname and host_is_within(parts.hostname, hosts)


def test_targets_are_normalised_and_plain_strings() -> None:
    target = validate("wechat_miniprogram", {"appid": " wx0123456789abcdef ",
                                             "path": "/pages/a/b", "query": "?",
                                             "share_token": None})
    assert target == {"appid": "wx0123456789abcdef", "path": "pages/a/b"}
    assert all(isinstance(v, str) for v in validate("jd", {"sku": 123456}).values())


def test_miniprogram_query_round_trips() -> None:
    query = "id=42&from=share&next=/pages/x?y=1"
    front = adapter("wechat_miniprogram").storefront(
        validate("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "p/i",
                                        "query": query}))
    assert front.app_url is not None
    params = parse_qs(urlsplit(front.app_url).query)
    assert params == {"appid": ["wx0123456789abcdef"], "path": ["p/i"], "query": [query]}
    alipay = adapter("alipay").storefront(
        validate("alipay", {"appid": "2021000000000001", "page": "p/i", "query": query}))
    assert alipay.app_url is not None
    assert parse_qs(urlsplit(alipay.app_url).query)["query"] == [query]
    douyin = adapter("douyin").storefront(
        validate("douyin", {"appid": "ttb3d2c56f2ce8e78c", "path": "pages/a/b"}))
    assert douyin.app_url is not None
    assert unquote(parse_qs(urlsplit(douyin.app_url).query)["start_page"][0]) == "pages/a/b"


# --- bad targets -> TargetError codes ----------------------------------------------------------
BAD = [
    # ids of the wrong shape
    ("taobao", {"item_id": "12ab"}, "invalid_field", "taobao.item_id"),
    ("taobao", {"item_id": "1234"}, "invalid_field", "taobao.item_id"),
    ("tmall", {"item_id": "-600000000002"}, "invalid_field", "tmall.item_id"),
    ("jd", {"sku": "sku-1"}, "invalid_field", "jd.sku"),
    ("pinduoduo", {"goods_id": "1e10"}, "invalid_field", "pinduoduo.goods_id"),
    ("douyin", {"product_id": "abc"}, "invalid_field", "douyin.product_id"),
    ("douyin", {"appid": "wx0123456789abcdef", "path": "p"}, "invalid_field", "douyin.appid"),
    ("douyin", {"appid": "ttb3d2c56f2ce8e78c"}, "missing_field", "douyin.path"),
    ("douyin", {"product_id": "3578430953573501732", "path": "p"}, "missing_field",
     "douyin.appid"),
    ("kuaishou", {"item_id": "x1"}, "invalid_field", "kuaishou.item_id"),
    ("xiaohongshu", {"item_id": "12345"}, "invalid_field", "xiaohongshu.item_id"),
    ("xiaohongshu", {"item_id": "64A0000000000000000000A1"}, "invalid_field",
     "xiaohongshu.item_id"),
    ("wechat_miniprogram", {"appid": "wx0123", "path": "p"}, "invalid_field",
     "wechat_miniprogram.appid"),
    ("wechat_miniprogram", {"appid": "wxg123456789abcdef", "path": "p"}, "invalid_field",
     "wechat_miniprogram.appid"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "pages/a?id=1"},
     "invalid_field", "wechat_miniprogram.path"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "../etc"},
     "invalid_field", "wechat_miniprogram.path"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "p", "query": "a=1 b=2"},
     "invalid_field", "wechat_miniprogram.query"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "p", "query": "x" * 513},
     "invalid_field", "wechat_miniprogram.query"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef"}, "missing_field",
     "wechat_miniprogram.path"),
    ("alipay", {"appid": "202100000000001", "page": "p"}, "invalid_field", "alipay.appid"),
    ("alipay", {"appid": "2021000000000001"}, "missing_field", "alipay.page"),
    # missing, unknown and badly typed fields
    ("taobao", {}, "missing_field", "taobao"),
    ("taobao", {"share_token": "￥x￥"}, "missing_field", "taobao"),
    ("jd", {"sku": "100012043978", "price": "1"}, "unknown_field", "jd.price"),
    ("jd", {"sku": True}, "invalid_field", "jd.sku"),
    ("jd", {"sku": ["1"]}, "invalid_field", "jd.sku"),
    ("jd", ["sku"], "invalid_target", "jd"),
    ("taobao", {"item_id": "600000000001", "share_token": "a\x00b"}, "invalid_field",
     "taobao.share_token"),
    ("taobao", {"item_id": "600000000001", "share_token": "x" * 513}, "invalid_field",
     "taobao.share_token"),
    # URLs off the platform's hosts, or not https
    ("taobao", {"item_id": "600000000001", "url": "https://evil.example.com/item"},
     "host_not_allowed", "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "https://taobao.com.evil.com/"},
     "host_not_allowed", "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "http://item.taobao.com/item.htm?id=1"},
     "invalid_url", "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "javascript:alert(1)"}, "invalid_url",
     "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "https://user:pw@item.taobao.com/"},
     "invalid_url", "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "//item.taobao.com/"}, "invalid_url",
     "taobao.url"),
    ("taobao", {"item_id": "600000000001", "url": "https://item.taobao.com\\@evil.com/"},
     "invalid_url", "taobao.url"),
    ("jd", {"sku": "100012043978", "url": "https://item.taobao.com/item.htm?id=1"},
     "host_not_allowed", "jd.url"),
    ("wechat_miniprogram", {"appid": "wx0123456789abcdef", "path": "p",
                            "url": "https://evil.example.com/wxaurl.cn"},
     "host_not_allowed", "wechat_miniprogram.url"),
    ("web", {"url": "https://evil.example.com/tea"}, "host_not_allowed", "web.url"),
    ("web", {"url": "https://notshop.example.com/"}, "host_not_allowed", "web.url"),
    ("web", {"url": "http://shop.example.com/tea"}, "invalid_url", "web.url"),
    ("web", {"url": "https://shop.example.com:bad/"}, "invalid_url", "web.url"),
    ("web", {}, "missing_field", "web"),
]


@pytest.mark.parametrize(("platform", "raw", "code", "field"), BAD,
                         ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_targets_are_refused(platform: str, raw: Any, code: str, field: str) -> None:
    with pytest.raises(TargetError) as caught:
        validate(platform, raw)
    assert caught.value.code == code
    assert caught.value.field == field
    assert caught.value.message


def test_web_target_needs_a_merchant_domain() -> None:
    with pytest.raises(TargetError) as caught:
        adapter("web").validate_target({"url": "https://shop.example.com/"})
    assert caught.value.code == "host_not_allowed"


@pytest.mark.parametrize("platform", APP_ONLY)
def test_app_only_platforms_refuse_targets(platform: str) -> None:
    app = adapter(platform)
    assert not app.is_target and app.target_fields == ()
    for raw in ({}, {"url": "https://weixin.qq.com/"}, {"item_id": "600000000001"}):
        with pytest.raises(TargetError) as caught:
            app.validate_target(raw, web_domains=MERCHANT_DOMAINS)
        assert caught.value.code == "unsupported_platform"
        assert caught.value.field == platform


# --- the registry and what each adapter declares ----------------------------------------------
def test_registry_covers_the_contract() -> None:
    assert sorted(platform_ids()) == sorted(CONTRACT_IDS)
    assert len(ADAPTERS) == len(CONTRACT_IDS)
    assert set(target_platform_ids()) == set(TARGET_TABLE)
    for platform in CONTRACT_IDS:
        assert adapter(platform).platform == platform
    assert by_platform("tiktok") is None


def test_registry_order() -> None:
    ids = list(platform_ids())
    assert ids[-1] == "web"
    assert ids.index("wecom") < ids.index("wechat")
    assert ids.index("wechat_miniprogram") < ids.index("wechat")
    assert ids.index("wechat") < ids.index("qq")


@pytest.mark.parametrize("platform", CONTRACT_IDS)
def test_adapter_declarations(platform: str) -> None:
    app = adapter(platform)
    assert app.label
    assert app.target_fields == TARGET_TABLE.get(platform, ())
    # What an app opens is always something a product can have a storefront on.
    assert app.opens <= set(TARGET_TABLE), app.opens - set(TARGET_TABLE)
    if app.is_target and platform != "web":
        assert app.owned_hosts
    if platform != "web":
        assert app.ua_markers and app.referer_hosts
    assert app.ua_samples
    for sample in app.ua_samples:
        # Short synthetic fragments, never a full real User-Agent.
        assert len(sample) <= 100, sample
    if app.miniprogram_platform is not None:
        assert app.miniprogram_platform in app.opens


@pytest.mark.parametrize("platform", [p for p in CONTRACT_IDS if p != "web"])
def test_each_app_opens_its_own_storefront(platform: str) -> None:
    app = adapter(platform)
    if app.is_target and platform != "wechat_miniprogram":
        assert platform in app.opens


def test_browser_opens_every_storefront() -> None:
    assert adapter("web").opens == set(TARGET_TABLE)


def test_modules_have_docstrings_and_all() -> None:
    for path in sorted((REPO / "adapters").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"
        names = [t.id for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{path.name} has no __all__"
    assert set(adapters.__all__) >= {"ADAPTERS", "by_platform", "platform_ids", "TargetError"}


def test_no_real_user_agent_in_code() -> None:
    real = []
    for path in (CORPUS, CORPUS.with_name("extra.tsv")):
        with path.open(encoding="utf-8", newline="") as handle:
            real += [row["user_agent"] for row in csv.DictReader(handle, delimiter="\t")]
    sources = [*(REPO / "adapters").glob("*.py"), REPO / "gateway/detect.py",
               REPO / "gateway/resolve.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for ua in real:
            if len(ua) >= 40:
                assert ua not in text, f"{path.name} holds a real User-Agent: {ua[:60]}"
