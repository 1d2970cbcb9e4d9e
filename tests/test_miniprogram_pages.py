"""The pages that hand a shopper to a mini-program: the open tag inside WeChat (its JS-SDK
signature recomputed here from WeChat's documented algorithm), the help page when nothing
is set up, and the launch page outside WeChat."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.appkeys import JSSDK, RECORDER
from gateway.logs import configure_logging
from gateway.wechat.jssdk import signature

from .conftest import BOT_UA, DESKTOP_UA, Tenant, add_tenant, create_product
from .fake_wechat import (  # noqa: F401 -- fixtures
    APP_SECRET,
    APPID,
    JSSDK_PATH,
    OA_APPID,
    OA_SECRET,
    FakeWeChat,
    fake_fixture,
    gateway_fixture,
)
from .wait import until

WECHAT_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 "
              "MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI")
WECHAT_ANDROID = ("Mozilla/5.0 (Linux; Android 13; wv) Chrome/116.0 Mobile Safari/537.36 "
                  "MicroMessenger/8.0.44.2502 XWEB/1160065")
ANDROID_CHROME = "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile Safari/537.36"
IPHONE_SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148 Safari/604.1"
DOUYIN_ANDROID = "Mozilla/5.0 (Linux; Android 14; wv) aweme_300100 JsSdk/1.0 AppName/aweme"
MINI = {"appid": APPID, "path": "pages/item/index", "query": "id=42", "name": "茶庄商城",
        "username": "gh_0123456789ab"}
PRODUCT = {"title": "明前龙井", "targets": {"wechat_miniprogram": MINI,
                                            "jd": {"sku": "100000000001"},
                                            "taobao": {"item_id": "600000000001"}}}
PLAIN = "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index&query=id%3D42"


async def _product(gateway: TestClient[Any, Any], tenant: Tenant,
                   body: dict[str, Any] = PRODUCT) -> dict[str, Any]:
    return await create_product(gateway, tenant, body)


async def _with_account(gateway: TestClient[Any, Any]) -> Tenant:
    """A merchant who gave the gateway its official account (the open tag's signer)."""
    tenant = await add_tenant(gateway, "acme")
    await _official_account(gateway, tenant)
    return tenant


async def _official_account(gateway: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await gateway.put("/api/credentials/wechat_official_account",
                             json={"appid": OA_APPID, "secret": OA_SECRET}, headers=tenant.auth)
    assert resp.status == 200, await resp.text()


async def _page(gateway: TestClient[Any, Any], path: str, ua: str) -> tuple[int, str]:
    gateway.session.cookie_jar.clear()
    resp = await gateway.get(path, headers={"User-Agent": ua}, allow_redirects=False)
    return resp.status, resp.headers.get("Location") or await resp.text()


def _wx_config(page: str) -> dict[str, Any]:
    found = re.search(r"wx\.config\((\{.*?\})\);", page)
    assert found, "no wx.config on the page"
    raw = re.sub(r"(\w+):", r'"\1":', found.group(1)).replace("'", '"')
    config: dict[str, Any] = json.loads(raw)
    return config


def test_signature_matches_wechats_documented_example() -> None:
    """JS-SDK 说明文档, 附录1: the example's inputs give its published signature."""
    ticket = ("sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1"
              "AOcHKP7qg")
    assert signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com") \
        == "f4d90daf4b3bca3078ab155816175ba34c443a7b"
    assert signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457,
                     "http://mp.weixin.qq.com?params=value#top") \
        == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


async def test_open_tag_inside_wechat_with_a_signature_that_checks_out(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, server = fake
    tenant = await _with_account(gateway)
    assert wechat.tickets_issued == 1  # fetched when the account was set, before any page
    product = await _product(gateway, tenant)
    # Each page is signed for its own URL, with a nonce of its own, though the page around
    # it is rendered once per app (and the click id spliced in).
    nonces, clicks = set(), set()
    for ua, channel in ((WECHAT_IOS, "spring"), (WECHAT_ANDROID, "spring"),
                        (WECHAT_IOS, "summer"), (WECHAT_IOS, "spring")):
        status, page = await _page(gateway, f"/p/{product['code']}?ch={channel}", ua)
        assert status == 200
        tag = re.search(r"<wx-open-launch-weapp ([^>]+)>", page)
        assert tag, page
        attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
        count_url = attributes.pop("data-count")
        assert count_url.startswith(f"/o/{product['code']}/wechat_miniprogram?c=")
        clicks.add(count_url)
        assert attributes == {"id": "open-tag", "appid": APPID, "username": "gh_0123456789ab",
                              "path": "pages/item/index.html?id=42"}
        config = _wx_config(html.unescape(page))
        assert config["appId"] == OA_APPID and config["openTagList"] == ["wx-open-launch-weapp"]
        # The signature, recomputed from the documented algorithm: sha1 over the sorted,
        # unescaped fields, the URL being the page's own (the share link, query and all).
        page_url = f"https://go.test/p/{product['code']}?ch={channel}"
        plain = (f"jsapi_ticket={wechat.ticket}&noncestr={config['nonceStr']}"
                 f"&timestamp={config['timestamp']}&url={page_url}")
        assert config["signature"] == hashlib.sha1(plain.encode()).hexdigest()
        nonces.add(config["nonceStr"])
        # WeChat's JS-SDK is the one script from elsewhere, and only here.
        scripts = re.findall(r'<script src="([^"]+)"', page)
        assert scripts == [str(server.make_url(JSSDK_PATH))]
        assert str(server.make_url(JSSDK_PATH)) in re.search(
            r'Content-Security-Policy" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        assert "weixin://" not in page
    assert len(nonces) == len(clicks) == 4
    assert wechat.tickets_issued == 1  # cached, not fetched per page


async def _opens(gateway: TestClient[Any, Any], tenant: Tenant) -> dict[str, Any]:
    """The merchant's clicks and storefront opens by channel, all clicks written."""
    assert gateway.app is not None
    await gateway.app[RECORDER].flush()
    resp = await gateway.get("/api/stats?by=channel", headers=tenant.marketing_auth)
    assert resp.status == 200, await resp.text()
    return {row["channel"]: (row["clicks"], row["storefront_opens"])
            for row in (await resp.json())["rows"]}


async def test_a_launch_from_the_open_tag_counts_as_a_storefront_open_of_its_click(
    gateway: TestClient[Any, Any],
) -> None:
    # WeChat opens the mini-program itself, so the page reports the tag's launch event: the
    # funnel shows the open (and the open rate is not 0% for WeChat shoppers).
    acme = await _with_account(gateway)
    other = await add_tenant(gateway, "other")
    await _official_account(gateway, other)
    tea, theirs = await _product(gateway, acme), await _product(gateway, other)
    _, page = await _page(gateway, f"/p/{tea['code']}?ch=spring", WECHAT_IOS)
    found = re.search(r'data-count="([^"]+)"', page)
    assert found, page
    launched = html.unescape(found.group(1))
    resp = await gateway.post(launched, headers={"User-Agent": WECHAT_IOS})
    assert resp.status == 204
    assert await _opens(gateway, acme) == {"spring": (1, 1)}
    # A link preview's bot, another merchant's product under this click, a platform the
    # product is not on, a link that does not exist: nothing more is counted anywhere.
    click = launched.partition("?")[2]
    assert (await gateway.post(launched, headers={"User-Agent": BOT_UA})).status == 204
    for path, status, code in (
            (f"/o/{tea['code']}/douyin?{click}", 404, "storefront_not_found"),
            (f"/o/{tea['code']}/jd?{click}", 404, "storefront_not_found"),  # no tag opens it
            (f"/o/nosuchcode/wechat_miniprogram?{click}", 404, "link_not_found")):
        resp = await gateway.post(path, headers={"User-Agent": WECHAT_IOS})
        assert resp.status == status and code in await resp.text(), path
    assert await _opens(gateway, acme) == {"spring": (1, 1)}
    assert await _opens(gateway, other) == {}
    resp = await gateway.post(f"/o/{theirs['code']}/wechat_miniprogram?{click}",
                              headers={"User-Agent": WECHAT_IOS})
    assert resp.status == 204  # counted as theirs, with no click of theirs: no channel
    assert await _opens(gateway, other) == {"": (0, 1)}
    assert await _opens(gateway, acme) == {"spring": (1, 1)}


async def test_the_ticket_is_renewed_before_it_expires(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await _with_account(gateway)
    assert gateway.app is not None
    jssdk = gateway.app[JSSDK]
    start = jssdk.clock()
    jssdk.clock = lambda: start + 6000  # 7200 s tickets: not yet within the last 10 minutes
    await jssdk.refresh_due()
    assert wechat.tickets_issued == 1
    jssdk.clock = lambda: start + 6700
    await jssdk.refresh_due()
    assert wechat.tickets_issued == 2
    product = await _product(gateway, tenant)
    _, page = await _page(gateway, f"/p/{product['code']}", WECHAT_IOS)
    assert "<wx-open-launch-weapp" in page
    config = _wx_config(html.unescape(page))
    assert config["signature"] == signature(wechat.ticket, config["nonceStr"],
                                            config["timestamp"],
                                            f"https://go.test/p/{product['code']}")


async def test_a_garbage_ticket_answer_is_wechats_error_and_renewal_goes_on(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    # WeChat (or a proxy before it) answering expires_in "soon": int() raised ValueError out
    # of refresh_due, which ended the background renewal for good (its loop has no
    # handler), and every page lost its open tag once the tickets ran out.
    wechat, _ = fake
    await _with_account(gateway)
    assert gateway.app is not None
    jssdk = gateway.app[JSSDK]
    start = jssdk.clock()
    jssdk.clock = lambda: start + 6700  # within the last 10 minutes: due
    wechat.ticket_expires_in = "soon"  # type: ignore[assignment]
    await jssdk.refresh_due()  # refused, as WeChat's error: logged, tried again later
    assert wechat.tickets_issued == 2
    wechat.ticket_expires_in = 7200
    jssdk.clock = lambda: start + 6710  # past the wait after a refusal
    await jssdk.refresh_due()
    assert wechat.tickets_issued == 3
    jssdk.clock = lambda: start + 7000  # the renewed ticket is good: nothing due
    await jssdk.refresh_due()
    assert wechat.tickets_issued == 3


async def test_while_wechat_refuses_the_ticket_pages_do_not_each_ask_again(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every WeChat shopper's page without a ticket fetched one: while WeChat refused (its
    # ticket API has a small daily quota), 50 pages were 51 calls and 51 warnings.
    configure_logging("info", "json")
    wechat, _ = fake
    tenants = [await add_tenant(gateway, merchant) for merchant in ("acme", "bolt")]
    wechat.fail_next["cgi-bin/ticket/getticket"] = [45009] * 100
    assert gateway.app is not None
    jssdk = gateway.app[JSSDK]
    now = jssdk.clock()
    jssdk.clock = lambda: now
    await _official_account(gateway, tenants[0])  # its warm-up fetch: refused
    products = [await _product(gateway, tenant) for tenant in tenants]
    for _ in range(25):
        for product in products:
            _, page = await _page(gateway, f"/p/{product['code']}", WECHAT_IOS)
            assert "<wx-open-launch-weapp" not in page and 'id="find-steps"' in page
    asks = [path for path, _ in wechat.refused if path == "cgi-bin/ticket/getticket"]
    assert len(asks) == 1  # the warm-up's; the pages waited
    wechat.fail_next.clear()
    jssdk.clock = lambda: now + 3  # past the first wait (2 s)

    async def open_tag() -> bool:  # the first page asks again; a later one has the ticket
        _, page = await _page(gateway, f"/p/{products[0]['code']}", WECHAT_IOS)
        return "<wx-open-launch-weapp" in page

    await until(open_tag, what="the open tag once WeChat gives a ticket")
    assert wechat.tickets_issued == 1
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()
              if line.startswith("{")]
    assert (events.count("wechat.jsapi_ticket_failed"),
            events.count("wechat.jsapi_ticket_back")) == (1, 1)


async def test_no_ticket_yet_the_page_falls_back_and_asks_for_one(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await add_tenant(gateway, "acme")
    wechat.fail_next["cgi-bin/ticket/getticket"] = [-1]
    await _official_account(gateway, tenant)
    product = await _product(gateway, tenant)
    status, page = await _page(gateway, f"/p/{product['code']}", WECHAT_IOS)
    assert status == 200 and "<wx-open-launch-weapp" not in page and "jweixin" not in page
    assert 'id="find-steps"' in page
    # That page asked for a ticket in the background: a later page has the open tag.
    deadline = asyncio.get_running_loop().time() + 10
    while "<wx-open-launch-weapp" not in page:
        assert asyncio.get_running_loop().time() < deadline, "no ticket fetched"
        await asyncio.sleep(0.05)
        _, page = await _page(gateway, f"/p/{product['code']}", WECHAT_IOS)
    assert wechat.tickets_issued == 1


async def test_without_any_credentials_a_wechat_shopper_gets_help_not_a_dead_end(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    tenant = await add_tenant(gateway, "acme")
    product = await _product(gateway, tenant, {**PRODUCT, "targets": {
        **PRODUCT["targets"], "wechat_miniprogram": {**MINI, "share_token": "#小程序://茶庄商城/AbC"}}})
    status, page = await _page(gateway, f"/p/{product['code']}", WECHAT_ANDROID)
    assert status == 200 and "weixin://" not in page and "jweixin" not in page
    steps = re.search(r'<ol class="steps" id="find-steps">(.*?)</ol>', page, re.S)
    assert steps and "搜索「茶庄商城」" in steps.group(1)
    assert "#小程序://茶庄商城/AbC" in steps.group(1) and "「在浏览器打开」" in steps.group(1)
    # What WeChat does open is right there: JD through the tracked hop, Taobao with the guide.
    hops = dict(re.findall(r'data-platform="(\w+)" href="([^"]+)"', page))
    assert set(hops) == {"jd"}
    assert 'class="blocked" data-platform="taobao"' in page and 'id="guide"' in page
    assert page.index('id="miniprogram"') < page.index('id="stores"')


async def test_outside_wechat_iphone_goes_to_the_scheme_android_taps_a_launch_page(
    gateway: TestClient[Any, Any],
) -> None:
    tenant = await add_tenant(gateway, "acme")
    only = await _product(gateway, tenant, {"title": "明前龙井", "targets": {
        "wechat_miniprogram": MINI}})
    assert await _page(gateway, f"/p/{only['code']}", IPHONE_SAFARI) == (302, PLAIN)
    status, page = await _page(gateway, f"/p/{only['code']}", ANDROID_CHROME)
    assert status == 200
    button = re.search(r'<a class="btn" id="launch-button" href="([^"]+)" data-scheme="([^"]+)"',
                       page)
    assert button and html.unescape(button.group(2)) == PLAIN
    assert 'id="fallback" role="status" hidden' in page and "没有打开微信？" in page
    assert "setTimeout" in page and "2000" in page and "location.href" in page
    assert "other-stores" not in page  # nothing else to choose from
    # The page is kept, as bytes, until the product changes.
    resp = await gateway.patch(f"/api/products/{only['id']}", headers=tenant.auth,
                               json={"title": "明前龙井 新茶"})
    assert resp.status == 200, await resp.text()
    assert "明前龙井 新茶" in (await _page(gateway, f"/p/{only['code']}", ANDROID_CHROME))[1]
    # With other stores, Android's landing page offers the mini-program through the hop,
    # which is the launch page; the hop is counted as a storefront open.
    more = await _product(gateway, tenant)
    _, landing = await _page(gateway, f"/p/{more['code']}", ANDROID_CHROME)
    hop = dict(re.findall(r'data-platform="(\w+)" href="([^"]+)"', landing))["wechat_miniprogram"]
    status, launch = await _page(gateway, html.unescape(hop), ANDROID_CHROME)
    assert status == 200 and 'id="launch-button"' in launch and 'id="other-stores"' in launch


async def test_in_another_app_the_mini_program_is_tried_through_the_launch_page(
    gateway: TestClient[Any, Any],
) -> None:
    tenant = await add_tenant(gateway, "acme")
    product = await _product(gateway, tenant)
    status, page = await _page(gateway, f"/p/{product['code']}", DOUYIN_ANDROID)
    assert status == 200 and 'id="guide"' in page
    blocked = re.search(r'<div class="blocked" data-platform="wechat_miniprogram">\s*'
                        r'<a class="btn alt" href="([^"]+)">打开微信小程序</a>', page)
    assert blocked, page
    status, launch = await _page(gateway, html.unescape(blocked.group(1)), DOUYIN_ANDROID)
    assert status == 200 and 'id="launch-button"' in launch
    # If Douyin refuses the scheme, the fallback says where Douyin keeps "open in browser".
    fallback = re.search(r'<div class="card" id="fallback"[^>]*>(.*?)</div>\n', launch, re.S)
    assert fallback and "选择「在浏览器打开」" in fallback.group(1)


async def test_js_sdk_only_inside_wechat(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    tenant = await _with_account(gateway)
    await gateway.put("/api/credentials/wechat_miniprogram",
                      json={"appid": APPID, "secret": APP_SECRET}, headers=tenant.auth)
    product = await _product(gateway, tenant)
    for ua in (DESKTOP_UA, DOUYIN_ANDROID, ANDROID_CHROME, IPHONE_SAFARI):
        status, page = await _page(gateway, f"/p/{product['code']}", ua)
        assert "jweixin" not in page and "wx.config" not in page, ua
    # With a URL Link, WeChat goes straight to it: no page, no script at all.
    status, location = await _page(gateway, f"/p/{product['code']}", WECHAT_IOS)
    assert (status, location) == (302, "https://wxaurl.cn/fake1")
