"""The shopper's side over loopback: share link, landing page, previews, hops, visitors."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import RECORDER, STORE

from .conftest import (
    BOT_UA,
    DESKTOP_UA,
    PRODUCT,
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)


async def _tap(client: TestClient[Any, Any], product: dict[str, Any], ua: str = TAOBAO_UA,
               cookie: str | None = None) -> ClientResponse:
    """A shopper taps the product's share link (in Taobao unless ``ua`` says otherwise),
    with the visitor cookie ``cookie`` if given; redirects are not followed."""
    headers = {"User-Agent": ua} if cookie is None else {"User-Agent": ua, "Cookie": cookie}
    return await client.get(f"/p/{product['code']}", headers=headers, allow_redirects=False)


async def _stats(client: TestClient[Any, Any], tenant: Tenant, by: str = "platform") -> dict[str, Any]:
    assert client.app is not None
    await client.app[RECORDER].flush()
    resp = await client.get(f"/api/stats?by={by}", headers=tenant.auth)
    assert resp.status == 200
    return {row[by if by != "product" else "product_id"]: row for row in (await resp.json())["rows"]}


async def test_shopper_in_taobao_goes_straight_to_the_item(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    resp = await _tap(client, product)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://item.taobao.com/item.htm?id=600000000001"
    assert "ll_v" in resp.cookies


async def test_desktop_browser_gets_a_landing_page_with_tracked_storefronts(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    resp = await client.get(f"/p/{product['code']}", headers={"User-Agent": DESKTOP_UA})
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "明前龙井 250g" in page and "¥168.00" in page
    hops = re.findall(r'href="(/o/[^"]+)"', page)
    assert hops, page
    assert all(h.startswith(f"/o/{product['code']}/") and "?c=" in h for h in hops)
    assert "<svg" in page  # a QR code of the share link for the phone


async def test_bots_get_a_preview_and_count_only_as_bot_clicks(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    resp = await _tap(client, product, BOT_UA)
    assert resp.status == 200
    page = await resp.text()
    assert '<meta property="og:title" content="明前龙井 250g">' in page
    assert '<meta property="og:image" content="https://img.example.com/tea.jpg">' in page
    rows = await _stats(client, tenant)
    assert rows["web"]["bot_clicks"] == 1
    assert rows["web"]["clicks"] == 0 and rows["web"]["unique_visitors"] == 0


async def test_unknown_and_retired_links_get_plain_pages(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    resp = await client.get("/p/doesnotexist")
    assert resp.status == 404 and resp.content_type == "text/html"
    assert "link_not_found" in await resp.text()
    product = await create_product(client, tenant)
    await client.delete(f"/api/products/{product['id']}", headers=tenant.auth)
    resp = await client.get(f"/p/{product['code']}", allow_redirects=False)
    assert resp.status == 410 and "link_retired" in await resp.text()
    resp = await client.get("/nowhere")
    assert resp.status == 404 and resp.content_type == "text/html"


async def test_repeat_clicks_with_one_cookie_are_one_unique_visitor(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    first = await _tap(client, product)
    visitor = first.cookies["ll_v"].value
    for _ in range(3):
        again = await _tap(client, product, cookie=f"ll_v={visitor}")
        assert "ll_v" not in again.cookies  # the cookie is kept, not replaced
    client.session.cookie_jar.clear()
    await _tap(client, product)
    rows = await _stats(client, tenant)
    assert rows["taobao"]["clicks"] == 5
    assert rows["taobao"]["unique_visitors"] == 2


async def test_storefront_hop_counts_an_open_and_goes_only_to_the_stored_target(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    code = product["code"]
    resp = await client.get(f"/o/{code}/jd?c=AbCdEf123456&url=https://evil.example.net/",
                            headers={"User-Agent": DESKTOP_UA}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("https://item.m.jd.com/product/100000000001")
    # A platform the product has no target on, or no platform at all, goes nowhere.
    assert (await client.get(f"/o/{code}/pinduoduo", allow_redirects=False)).status == 404
    assert (await client.get(f"/o/{code}/nosuch", allow_redirects=False)).status == 404
    rows = await _stats(client, tenant)
    assert rows["web"]["storefront_opens"] == 1
    assert client.app is not None
    store = client.app[STORE]
    # The open carries the click id it was handed, so it joins to its click.
    conn = store._rconn  # type: ignore[attr-defined]
    assert conn.execute("SELECT click_id, target FROM events").fetchall() == [
        ("AbCdEf123456", "jd")]


async def test_a_click_counts_under_its_app_its_channel_tag_or_its_referer(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # The app's User-Agent decides the platform; a ?ch= tag rides along as the channel (its
    # capitals, typed by hand, don't make it another or none; a tag that can't be a channel
    # name is none); a plain phone browser is attributed by the Referer of the page the link
    # was on.
    product = await create_product(client, tenant)
    phone_browser = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari")
    for query, ua, referer in [("", TAOBAO_UA, None), ("?ch=live", TAOBAO_UA, None),
                               ("?ch=live", TAOBAO_UA, None), ("?ch=Live", TAOBAO_UA, None),
                               ("?ch=spring%20live", TAOBAO_UA, None),
                               ("?ch=%E2%84%AAive", TAOBAO_UA, None),  # the Kelvin sign
                               ("", phone_browser, "https://www.douyin.com/video/1")]:
        headers = {"User-Agent": ua, **({"Referer": referer} if referer else {})}
        resp = await client.get(f"/p/{product['code']}{query}", headers=headers,
                                allow_redirects=False)
        assert resp.status in (200, 302)
    platforms = await _stats(client, tenant)
    assert {p: row["clicks"] for p, row in platforms.items()} == {"taobao": 6, "douyin": 1}
    channels = await _stats(client, tenant, by="channel")
    assert {c: row["clicks"] for c, row in channels.items()} == {"": 4, "live": 3}


async def test_no_request_can_choose_the_redirect(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    evil = "https://evil.example.net/"
    for path in (f"/p/{product['code']}?url={evil}&redirect={evil}&next={evil}",
                 f"/p/{product['code']}?ch=web&target={evil}"):
        for ua in (TAOBAO_UA, DESKTOP_UA, BOT_UA, ""):
            resp = await client.get(path, headers={"User-Agent": ua, "Referer": evil},
                                    allow_redirects=False)
            assert "evil" not in resp.headers.get("Location", ""), (path, ua)
            assert "evil.example.net" not in await resp.text()


async def test_raw_addresses_are_never_stored(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    await _tap(client, product)
    assert client.app is not None
    await client.app[RECORDER].flush()
    db = (client.app[STORE].path).read_bytes()  # type: ignore[attr-defined]
    wal = client.app[STORE].path.with_name("linkloop.db-wal")  # type: ignore[attr-defined]
    blob = db + (wal.read_bytes() if wal.exists() else b"")
    assert b"127.0.0.1" not in blob
    row = client.app[STORE]._rconn.execute("SELECT ip_hash FROM clicks").fetchone()  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{24}", row[0])


@pytest.mark.parametrize("trust_forwarded", [True, False])
async def test_the_address_hashed_is_the_proxys_client_only_when_the_proxy_is_trusted(
    aiohttp_client: ClientFactory, tmp_path: Path, trust_forwarded: bool,
) -> None:
    # Behind our own proxy every request comes from the proxy: X-Forwarded-For tells the
    # shoppers apart. Without that setting the header is anybody's to forge, so ignored.
    # A retired link's click (another merchant's) is hashed the same way.
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, server__trust_forwarded=trust_forwarded)))
    tenant, other = await add_tenant(client, "acme"), await add_tenant(client, "other")
    product = await create_product(client, tenant)
    retired = await create_product(client, other)
    assert (await client.delete(f"/api/products/{retired['id']}", headers=other.auth)).ok
    for tapped, forwarded, status in ((product, "203.0.113.7", 302),
                                      (product, "198.51.100.9, 10.0.0.1", 302),
                                      (product, "203.0.113.7", 302),
                                      (retired, "203.0.113.7", 410),
                                      (retired, "198.51.100.9", 410)):
        resp = await client.get(f"/p/{tapped['code']}", allow_redirects=False,
                                headers={"User-Agent": TAOBAO_UA, "X-Forwarded-For": forwarded})
        assert resp.status == status
    assert client.app is not None
    await client.app[RECORDER].flush()
    hashes = [row[0] for row in client.app[STORE]._rconn.execute(  # type: ignore[attr-defined]
        "SELECT ip_hash FROM clicks ORDER BY ts")]
    assert len(hashes) == 5 and all(re.fullmatch(r"[0-9a-f]{24}", h) for h in hashes)
    if trust_forwarded:
        assert hashes[0] == hashes[2] == hashes[3] != hashes[1] == hashes[4]
    else:
        assert len(set(hashes)) == 1


async def test_click_id_is_bound_on_every_log_line_of_the_request(
    aiohttp_client: Any, tmp_path: Any, capsys: Any,
) -> None:
    from gateway.app import create_app
    from gateway.logs import configure_logging

    from .conftest import add_tenant, make_settings

    configure_logging("info", "json")
    # No click log (a file where its directory goes) and a one-row queue: the first click
    # logs the log's failure, the second overflows to the journal; both during the request.
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, recorder__queue_size=1, recorder__flush_interval_ms=60_000)))
    (tmp_path / "data" / "clicklog").write_text("not a directory\n")
    tenant = await add_tenant(client, "acme")
    product = await create_product(client, tenant)
    capsys.readouterr()
    for _ in range(2):
        resp = await _tap(client, product)
        assert resp.status == 302
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "recorder.clicklog_failed"]
    full = [line for line in lines if line["event"] == "recorder.queue_full"]
    assert len(failed) == len(full) == 1
    assert re.fullmatch(r"[0-9A-Za-z_-]{16}", failed[0]["click_id"])
    assert failed[0]["click_id"] != full[0]["click_id"]
    assert re.fullmatch(r"[0-9A-Za-z_-]{16}", full[0]["click_id"])


def test_the_visitor_cookie_is_found_among_others() -> None:
    from gateway.shopper import cookie_value

    assert cookie_value("a=1; ll_v=abcDEF123456; b=2", "ll_v") == "abcDEF123456"
    assert cookie_value("xll_v=nope; ll_v=yes12345", "ll_v") == "yes12345"
    assert cookie_value("xll_v=nope", "ll_v") is None
    assert cookie_value(None, "ll_v") is None
    assert cookie_value("ll_v", "ll_v") is None


@pytest.fixture
async def short_ttl(aiohttp_client: ClientFactory,
                    tmp_path: Path) -> tuple[TestClient[Any, Any], Tenant]:
    """A gateway whose cached links go stale after a second, and a merchant on it."""
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, cache__link_ttl_seconds=1.0)))
    return client, await add_tenant(client, "acme")


async def test_a_change_made_behind_the_gateways_back_is_served_after_the_ttl(
    short_ttl: tuple[TestClient[Any, Any], Tenant],
) -> None:
    # Another worker on the same SQLite file changes links this process never hears about:
    # the cache serves what it has until the TTL, then re-reads every stale link at once.
    client, tenant = short_ttl
    products = [await create_product(client, tenant) for _ in range(3)]
    for product in products:
        resp = await _tap(client, product)
        assert resp.status == 302
    assert client.app is not None
    store = client.app[STORE]
    for product in products[:2]:  # the store directly: no cache is told
        await store.update_product(tenant.id, product["id"], {"status": "retired"})

    async def statuses() -> list[int]:
        found = []
        for product in products:
            resp = await _tap(client, product)
            found.append(resp.status)
        return found

    assert await statuses() == [302, 302, 302]  # within the TTL: the cached answer
    # Past the TTL a request is still answered from the cache and marks its link for the
    # shared re-read; within moments the change is served. Polled, not slept: CI is busy.
    deadline = asyncio.get_running_loop().time() + 10
    while (found := await statuses()) != [410, 410, 302]:
        assert found[2] == 302 and asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)


async def test_a_new_target_made_behind_the_gateways_back_is_where_shoppers_go_after_the_ttl(
    short_ttl: tuple[TestClient[Any, Any], Tenant],
) -> None:
    # The answer for a shopper's app is worked out once and kept with the cached link: a
    # re-read of the same version keeps it, a new version must replace it.
    client, tenant = short_ttl
    product = await create_product(client, tenant)

    async def location() -> str:
        resp = await _tap(client, product)
        assert resp.status == 302
        return resp.headers["Location"]

    first = await location()
    assert "600000000001" in first
    assert client.app is not None
    targets = {**product["targets"], "taobao": {"item_id": "600000000002"}}
    await client.app[STORE].update_product(tenant.id, product["id"], {"targets": targets})
    assert await location() == first  # within the TTL: the cached answer
    deadline = asyncio.get_running_loop().time() + 10
    while "600000000002" not in (now := await location()):
        assert now == first and asyncio.get_running_loop().time() < deadline, now
        await asyncio.sleep(0.1)


async def test_redirects_are_never_cached_and_leak_no_referrer(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # A browser or proxy that cached the 302 would skip the gateway on the next tap, and
    # the click would go uncounted; the storefront must not learn the share link's URL.
    product = await create_product(client, tenant)
    first = await _tap(client, product)
    cookie = first.headers["Set-Cookie"].split(";", 1)[0]
    returning = await _tap(client, product, cookie=cookie)
    hop = await client.get(f"/o/{product['code']}/jd", headers={"User-Agent": DESKTOP_UA},
                           allow_redirects=False)
    for resp in (first, returning, hop):
        assert resp.status == 302
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert cookie.startswith("ll_v=")
    assert "Set-Cookie" not in returning.headers and "Set-Cookie" not in hop.headers


async def test_each_click_is_stored_with_what_its_shopper_got(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # A click's outcome is what its shopper was answered with: the redirect, the landing
    # page, a bot's preview (outside the sales window too: a bot gets the preview there as
    # well), a person's "not yet" page and a retired link's page ('gone').
    other = await add_tenant(client, "other")
    mine = await create_product(client, tenant)
    later = await create_product(client, other, {**PRODUCT, "valid_from": "2099-01-01T00:00"})
    retired = await create_product(client, other)
    assert (await client.delete(f"/api/products/{retired['id']}", headers=other.auth)).ok
    taps = [(mine, TAOBAO_UA, 302, "redirect"), (mine, DESKTOP_UA, 200, "landing"),
            (mine, BOT_UA, 200, "preview"), (later, TAOBAO_UA, 200, "gone"),
            (later, BOT_UA, 200, "preview"), (retired, TAOBAO_UA, 410, "gone"),
            (retired, BOT_UA, 410, "gone")]
    for product, ua, status, _ in taps:
        resp = await _tap(client, product, ua)
        assert resp.status == status
        assert ("og:title" in await resp.text()) == (ua == BOT_UA and status == 200)
    assert client.app is not None
    await client.app[RECORDER].flush()
    stored = client.app[STORE]._rconn.execute(  # type: ignore[attr-defined]
        "SELECT merchant_id, product_id, bot, outcome FROM clicks").fetchall()
    assert sorted(stored) == sorted(
        (("acme" if product is mine else "other"), product["id"], int(ua == BOT_UA), outcome)
        for product, ua, _, outcome in taps)
