"""The landing page as a shopper's app receives it: small, self-contained, in Chinese, with
the open-in-browser guide pointing where that app keeps its menu."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.appkeys import RECORDER, STORE
from gateway.guide import GUIDES, overlay_for
from gateway.pages import qr_svg

from .conftest import DESKTOP_UA, TAOBAO_UA, Tenant, create_product

WECHAT_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI")
WECHAT_ANDROID = ("Mozilla/5.0 (Linux; Android 13; wv) AppleWebKit/537.36 Chrome/116.0 "
                  "Mobile Safari/537.36 MicroMessenger/8.0.44.2502 XWEB/1160065")
DOUYIN_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "Mobile/15E148 aweme_30.1.0 JsSdk/2.0 BytedanceWebview/d8a21c6")
DOUYIN_ANDROID = ("Mozilla/5.0 (Linux; Android 14; wv) AppleWebKit/537.36 Chrome/120 "
                  "Mobile Safari/537.36 aweme_300100 JsSdk/1.0 AppName/aweme ByteLocale/zh")
BAIDU_ANDROID = ("Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 Chrome/110 Mobile "
                 "Safari/537.36 baiduboxapp/13.30.0.10")
ACQUISITION = "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"


async def _landing(client: TestClient[Any, Any], code: str, ua: str) -> tuple[int, str, bytes]:
    client.session.cookie_jar.clear()
    resp = await client.get(f"/p/{code}", headers={"User-Agent": ua}, allow_redirects=False)
    body = await resp.read()
    return resp.status, body.decode(), body


async def test_what_a_wechat_shopper_receives_is_small_and_self_contained(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    await client.put("/api/entry", json={"kind": "acquisition_link", "url": ACQUISITION},
                     headers=tenant.auth)
    status, page, body = await _landing(client, product["code"], WECHAT_IOS)
    assert status == 200
    assert len(body) < 50 * 1024, len(body)
    # No script, style sheet or font from anywhere: only the merchant's own product image.
    assert not re.search(r'<(script|link|iframe)[^>]+(src|href)="(?!data:)', page)
    outside = set(re.findall(r'(?:src|href)="(https?://[^"]+)"', page))
    assert outside == {PRODUCT_IMAGE}
    assert "default-src 'none'" in page  # and the page says so to the browser
    # In Chinese, with the WeCom entry before the storefronts.
    assert '<html lang="zh-CN">' in page and "添加商家企业微信" in page
    assert page.index('id="entry"') < page.index('id="stores"')
    entry = re.search(r'<a class="btn wecom" href="([^"]+)"', page)
    assert entry and entry.group(1).startswith(f"/e/{product['code']}?c=")
    # What WeChat opens is a tracked button; Taobao (blocked) offers the guide and its token.
    hops = dict(re.findall(r'data-platform="(\w+)" href="([^"]+)"', page))
    assert set(hops) == {"jd", "web"}
    assert all(h.startswith(f"/o/{product['code']}/") and "?c=" in h for h in hops.values())
    taobao = re.search(r'<div class="blocked" data-platform="taobao">(.*?)</div>\n</div>',
                       page, re.S)
    assert taobao and 'href="#guide" data-show-guide' in taobao.group(1)
    assert 'data-copy="￥AbC123￥"' in taobao.group(1) and "复制口令" in taobao.group(1)
    # The guide overlay points at WeChat's menu, in WeChat's iOS words.
    assert 'class="overlay top-right"' in page and "选择「在Safari中打开」" in page
    assert f'data-copy="{product["share_url"]}"' in page  # copy the page's own link
    # Large tap targets.
    assert "min-height:52px" in page


PRODUCT_IMAGE = "https://img.example.com/tea.jpg"


@pytest.mark.parametrize(("ua", "corner", "words"), [
    (WECHAT_IOS, "top-right", "选择「在Safari中打开」"),
    (WECHAT_ANDROID, "top-right", "选择「在浏览器打开」"),
    (DOUYIN_IOS, "top-right", "选择「复制链接」，再打开手机浏览器粘贴访问"),
    (DOUYIN_ANDROID, "top-right", "选择「在浏览器打开」"),
    (BAIDU_ANDROID, "bottom-right", "请点击右下角的"),
])
async def test_the_overlay_points_where_each_app_keeps_its_menu(
    client: TestClient[Any, Any], tenant: Tenant, ua: str, corner: str, words: str,
) -> None:
    # Taobao is blocked in all of these apps (Baidu opens it: give Baidu a Douyin shop).
    product = await create_product(client, tenant, {
        "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"},
                                    "douyin": {"product_id": "3500000000000000001"},
                                    "web": {"url": "https://shop.example.com/tea"}}})
    code = product["code"]
    if "aweme" in ua:  # Douyin goes straight to its own shop; without one: the page
        product = await create_product(client, tenant, {
            "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
        code = product["code"]
    status, page, _ = await _landing(client, code, ua)
    assert status == 200, page
    assert f'class="overlay {corner}"' in page
    assert words in page


def test_every_app_has_its_overlay_and_browsers_fall_back_to_the_common_words() -> None:
    from adapters import ADAPTERS

    apps = {a.platform for a in ADAPTERS if a.platform != "web"}
    assert apps <= set(GUIDES), apps - set(GUIDES)
    assert overlay_for("unknown_app", "android").action == "在浏览器打开"
    assert overlay_for("unknown_app", "ios").action == "在Safari中打开"
    assert overlay_for("taobao", "ios").copy_only


async def test_a_desktop_shopper_gets_buttons_and_a_qr_code_and_the_app_shopper_a_redirect(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    status, page, _ = await _landing(client, product["code"], DESKTOP_UA)
    assert status == 200 and 'id="qr"' in page and "<svg" in page
    assert 'class="overlay' not in page  # a desktop browser opens everything
    hops = dict(re.findall(r'data-platform="(\w+)" href="([^"]+)"', page))
    assert set(hops) == {"taobao", "jd", "web"}
    status, _, _ = await _landing(client, product["code"], TAOBAO_UA)
    assert status == 302  # the hot path still goes straight to the app's own item


async def test_every_visit_to_a_landing_page_shows_the_qr_code_of_its_own_link(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # The code is drawn once per product and kept with the cached link: a later visit, or
    # another product's page, must never get a code that scans to some other link.
    products = [await create_product(client, tenant) for _ in range(2)]
    assert products[0]["share_url"] != products[1]["share_url"]
    for product in [*products, *products]:
        _, page, _ = await _landing(client, product["code"], DESKTOP_UA)
        assert qr_svg(product["share_url"]) in page


async def test_each_landing_page_carries_its_own_click_and_the_product_as_it_is_now(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    """The page is kept rendered between clicks: each shopper's links must still carry
    their own click (the attribution of their storefront open and WeCom add), and an edit
    of the product must show at once."""
    product = await create_product(client, tenant)
    await client.put("/api/entry", json={"kind": "acquisition_link", "url": ACQUISITION},
                     headers=tenant.auth)
    seen: dict[str, str] = {}
    for _ in range(3):
        client.session.cookie_jar.clear()
        resp = await client.get(f"/p/{product['code']}", headers={"User-Agent": WECHAT_IOS},
                                allow_redirects=False)
        assert resp.status == 200
        click_id = resp.cookies["ll_v"].value  # a new visitor's id is their click's
        page = await resp.text()
        links = re.findall(r'href="(/[oe]/[^"]+)"', page)
        assert len(links) == 3  # JD, web, the WeCom entry
        assert {link.rsplit("?c=", 1)[1] for link in links} == {click_id}
        seen[click_id] = page
    assert len(seen) == 3
    # The storefront open is the clicking shopper's, not the first one's.
    last = list(seen)[-1]
    hop = re.search(r'data-platform="jd" href="([^"]+)"', seen[last])
    assert hop is not None
    resp = await client.get(hop.group(1), headers={"User-Agent": WECHAT_IOS},
                            allow_redirects=False)
    assert resp.status == 302
    assert client.app is not None
    await client.app[RECORDER].flush()
    events = await client.app[STORE].export_events(tenant.id, after="", limit=10)
    assert [(e.kind, e.click_id) for e in events] == [("storefront_open", last)]
    resp = await client.patch(f"/api/products/{product['id']}", headers=tenant.auth,
                              json={"title": "明前龙井 新茶"})
    assert resp.status == 200, await resp.text()
    _, page, _ = await _landing(client, product["code"], WECHAT_IOS)
    assert "明前龙井 新茶" in page
