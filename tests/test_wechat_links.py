"""Mini-program links minted through a fake WeChat API when a product is saved, renewed
before they expire, retried after failures, and never minted at a shopper's expense."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.appkeys import MINIPROGRAM_LINKS, STORE
from gateway.wechat.links import MiniProgramLinks

from .conftest import LINKLOOP, Tenant, add_tenant, create_product, make_settings
from .fake_wechat import (  # noqa: F401 -- fixtures
    APP_SECRET,
    APPID,
    FakeWeChat,
    fake_fixture,
    gateway_fixture,
    wxacode_image,
)
from .test_cli import free_port, run

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 "
             "MicroMessenger/8.0.40(0x18002831) NetType/WIFI")
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Mobile/15E148 "
                 "Safari/604.1")
TARGET = {"appid": APPID, "path": "pages/item/index", "query": "id=42"}
PRODUCT = {"title": "礼盒", "targets": {"wechat_miniprogram": TARGET,
                                        "web": {"url": "https://shop.example.com/gift"}}}
PLAIN = "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index&query=id%3D42"
DAY = 86400.0


def _minter(gateway: TestClient[Any, Any]) -> MiniProgramLinks:
    assert gateway.app is not None
    return gateway.app[MINIPROGRAM_LINKS]


async def _credentials(gateway: TestClient[Any, Any], tenant: Tenant,
                       secret: str = APP_SECRET) -> None:
    resp = await gateway.put("/api/credentials/wechat_miniprogram",
                             json={"appid": APPID, "secret": secret}, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"platform": "wechat_miniprogram", "appid": APPID,
                                 "secret_set": True}


async def _create(gateway: TestClient[Any, Any], tenant: Tenant,
                  body: dict[str, Any] = PRODUCT) -> dict[str, Any]:
    return await create_product(gateway, tenant, body)


async def _open(gateway: TestClient[Any, Any], code: str, ua: str = WECHAT_UA,
                ) -> tuple[int, str]:
    """What a shopper gets: the redirect's Location, or the page."""
    gateway.session.cookie_jar.clear()
    resp = await gateway.get(f"/p/{code}", headers={"User-Agent": ua}, allow_redirects=False)
    return resp.status, resp.headers.get("Location") or await resp.text()


async def _settled(gateway: TestClient[Any, Any]) -> None:
    await _minter(gateway).wait()


async def _acme(gateway: TestClient[Any, Any]) -> Tenant:
    """A merchant who gave the gateway its mini-program's credentials."""
    tenant = await add_tenant(gateway, "acme")
    await _credentials(gateway, tenant)
    return tenant


async def _clocked(gateway: TestClient[Any, Any]) -> tuple[Tenant, MiniProgramLinks, float]:
    """A merchant with credentials, and the minter on a clock the test moves (now, to start)."""
    tenant = await _acme(gateway)
    minter = _minter(gateway)
    now = time.time()
    minter.clock = lambda: now
    return tenant, minter, now


async def test_first_click_on_a_new_product_gets_the_url_link(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await _acme(gateway)
    product = await _create(gateway, tenant)
    # Minted while the product was created: the very first click is the URL Link.
    assert await _open(gateway, product["code"]) == (302, "https://wxaurl.cn/fake1")
    assert product["minted"]["url_link"]["value"] == "https://wxaurl.cn/fake1"
    assert product["minted"]["scheme"]["value"].startswith("weixin://dl/business/?t=fake")
    assert "notes" not in product
    assert wechat.minted == [{"path": "pages/item/index", "query": "id=42", "expire_type": 1,
                              "expire_interval": 30}]
    assert wechat.schemes == [{"jump_wxa": {"path": "pages/item/index", "query": "id=42"},
                               "expire_type": 1, "expire_interval": 30}]
    # An iPhone outside WeChat taps the mini-program and goes to the encrypted scheme, which
    # opens any published page.
    hop = await gateway.get(f"/o/{product['code']}/wechat_miniprogram", allow_redirects=False,
                            headers={"User-Agent": IPHONE_SAFARI})
    assert hop.status == 302 and hop.headers["Location"] == product["minted"]["scheme"]["value"]
    for _ in range(3):
        assert await _open(gateway, product["code"]) == (302, "https://wxaurl.cn/fake1")
    assert len(wechat.minted) == 1 and wechat.tokens_issued == 1


async def test_no_credentials_no_weixin_redirect_and_the_merchant_is_told(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await add_tenant(gateway, "acme")
    product = await _create(gateway, tenant)
    assert [n["code"] for n in product["notes"]] == ["plain_scheme_declared_paths_only"]
    assert "明文Scheme拉起此小程序" in product["notes"][0]["message"]
    assert product["notes"][0]["field"] == "targets.wechat_miniprogram.path"
    status, page = await _open(gateway, product["code"])
    assert status == 200 and 'id="miniprogram"' in page and "weixin://" not in page
    hop = await gateway.get(f"/o/{product['code']}/wechat_miniprogram", allow_redirects=False,
                            headers={"User-Agent": IPHONE_SAFARI})
    assert hop.status == 302 and hop.headers["Location"] == PLAIN
    assert wechat.tokens_issued == 0 and wechat.minted == []


async def test_a_url_link_minted_on_one_gateway_is_served_by_another(
    aiohttp_client: Any, tmp_path: Path, fake: tuple[FakeWeChat, TestServer],
) -> None:
    settings = make_settings(tmp_path, wechat__api_base=str(fake[1].make_url("/")),
                             wechat__timeout_seconds=0.5)
    first: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    second: TestClient[Any, Any] = await aiohttp_client(create_app(settings, worker=1))
    tenant = await add_tenant(first, "acme")
    await _credentials(first, tenant)
    product = await _create(first, tenant)
    assert await _open(second, product["code"]) == (302, "https://wxaurl.cn/fake1")


async def test_expired_token_is_refreshed_once(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await _acme(gateway)
    wechat.expire_token_once = True
    product = await _create(gateway, tenant)
    await _settled(gateway)
    status, location = await _open(gateway, product["code"])
    assert status == 302 and location.startswith("https://wxaurl.cn/fake")
    # The calls in flight with that token were all refused; they fetched one new token.
    refused = {code for _path, code in wechat.refused}
    assert 42001 in refused and refused <= {42001, 40001}
    assert wechat.tokens_issued == 2


async def test_a_failed_mint_is_retried_with_a_growing_backoff(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant, minter, _start = await _clocked(gateway)
    wechat.fail_next["wxa/generate_urllink"] = [-1, -1]  # 系统繁忙, twice
    product = await _create(gateway, tenant)
    await _settled(gateway)
    code = product["code"]
    status, page = await _open(gateway, code)
    assert status == 200 and 'id="miniprogram"' in page  # meanwhile: the card, no weixin://
    store = gateway.app[STORE] if gateway.app is not None else None
    assert store is not None

    async def row() -> Any:
        return next(m for m in await store.minted("acme", code) if m.kind == "url_link")

    first = await row()
    assert first.value is None and first.attempts == 1 and first.error.startswith("-1")
    assert await minter.run_due() == 0  # not due yet: nothing is asked of WeChat
    minter.clock = lambda: first.due_at + 1
    assert await minter.run_due() == 1
    second = await row()
    assert second.attempts == 2 and second.due_at - first.due_at > 0.9 * 60  # it grew
    minter.clock = lambda: second.due_at + 1
    assert await minter.run_due() == 1
    third = await row()
    assert third.attempts == 0 and third.value.startswith("https://wxaurl.cn/")
    assert await _open(gateway, code) == (302, third.value)


async def test_links_are_renewed_before_they_expire(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant, minter, start = await _clocked(gateway)
    product = await _create(gateway, tenant)
    assert await _open(gateway, product["code"]) == (302, "https://wxaurl.cn/fake1")
    minter.clock = lambda: start + 26 * DAY
    assert await minter.run_due() == 0
    minter.clock = lambda: start + 27.5 * DAY  # within the 3 days before the 30 are up
    assert await minter.run_due() == 2  # the URL Link and the scheme; the code never expires
    assert await _open(gateway, product["code"]) == (302, "https://wxaurl.cn/fake3")
    assert len(wechat.minted) == 2 and len(wechat.codes) == 1


async def test_the_daily_quota_pauses_mints_until_tomorrow_and_is_reported_once(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant, minter, now = await _clocked(gateway)
    wechat.quota = 0
    with structlog.testing.capture_logs() as logs:
        first = await _create(gateway, tenant)
        second = await _create(gateway, tenant, {**PRODUCT, "title": "第二件"})
        await _settled(gateway)
    alerts = [e for e in logs if e["event"] == "wechat.quota_exhausted"]
    assert len(alerts) == 1 and alerts[0]["merchant"] == "acme" and alerts[0]["appid"] == APPID
    assert minter.counts["quota_exhausted"] == 1
    # After the first 45009, nothing more is asked of WeChat today.
    assert [c for p, c in wechat.refused if p == "wxa/generate_urllink"] == [45009]
    assert "45009" in second["minted"]["url_link"]["error"]
    for product in (first, second):
        status, page = await _open(gateway, product["code"])
        assert status == 200 and 'id="miniprogram"' in page
    assert await minter.run_due() == 0
    wechat.quota = None
    minter.clock = lambda: now + DAY + 700  # the next day in Beijing, and its jitter
    assert await minter.run_due() == 4
    assert (await _open(gateway, first["code"]))[1].startswith("https://wxaurl.cn/")


async def test_a_changed_target_mints_afresh_and_a_removed_one_forgets(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await _acme(gateway)
    product = await _create(gateway, tenant)
    url = f"/api/products/{product['id']}"
    renamed = await (await gateway.patch(url, json={"title": "新礼盒"}, headers=tenant.auth)).json()
    assert renamed["minted"]["url_link"]["value"] == "https://wxaurl.cn/fake1"
    assert len(wechat.minted) == 1  # a title is not a target: nothing minted again
    moved = {"targets": {**PRODUCT["targets"],
                         "wechat_miniprogram": {**TARGET, "query": "id=43"}}}
    changed = await (await gateway.patch(url, json=moved, headers=tenant.auth)).json()
    assert changed["minted"]["url_link"]["value"] != "https://wxaurl.cn/fake1"
    assert wechat.minted[-1]["query"] == "id=43"
    assert await _open(gateway, product["code"]) == (302, changed["minted"]["url_link"]["value"])
    web_only = {"targets": {"web": {"url": "https://shop.example.com/gift"}}}
    gone = await (await gateway.patch(url, json=web_only, headers=tenant.auth)).json()
    assert "minted" not in gone
    status, page = await _open(gateway, product["code"])
    assert status == 200 and "wxaurl.cn" not in page and 'id="miniprogram"' not in page
    assert await gateway.app[STORE].minted("acme", product["code"]) == []  # type: ignore[index]


async def test_the_mini_program_code_is_fetched_once_and_served(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    tenant = await _acme(gateway)
    wechat.fail_next["wxa/generate_urllink"] = [40002]  # no URL Links for this mini-program
    product = await _create(gateway, tenant)
    await _settled(gateway)
    assert wechat.codes == [{"scene": "id=42", "page": "pages/item/index"}]
    status, page = await _open(gateway, product["code"])
    found = re.search(r'<img src="(/p/[^"]+/miniprogram-code\?v=\w+)"', page)
    assert status == 200 and found and "长按识别小程序码" in page
    image = await gateway.get(found.group(1))
    assert image.status == 200 and image.content_type == "image/png"
    assert await image.read() == wxacode_image("pages/item/index", "id=42")
    await gateway.patch(f"/api/products/{product['id']}", json={"price": 9},
                        headers=tenant.auth)
    await _open(gateway, product["code"])
    assert len(wechat.codes) == 1  # kept, not fetched again
    assert (await gateway.get("/p/nosuchcode/miniprogram-code")).status == 404


async def test_credentials_set_later_mint_for_existing_products(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    tenant = await add_tenant(gateway, "acme")
    rival = await add_tenant(gateway, "rival")
    product = await _create(gateway, tenant)
    await _credentials(gateway, tenant)
    await _settled(gateway)
    assert await _open(gateway, product["code"]) == (302, "https://wxaurl.cn/fake1")
    # Another merchant naming the same mini-program gets nothing minted with acme's secret.
    theirs = await _create(gateway, rival)
    await _settled(gateway)
    status, _ = await _open(gateway, theirs["code"])
    assert status == 200 and "minted" in theirs and theirs["minted"] == {}
    assert len(fake[0].minted) == 1


async def test_credentials_are_write_only_and_scoped(gateway: TestClient[Any, Any]) -> None:
    tenant = await _acme(gateway)
    rival = await add_tenant(gateway, "rival")
    listing = await (await gateway.get("/api/credentials", headers=rival.auth)).json()
    assert listing == {"items": []}
    mine = await (await gateway.get("/api/credentials", headers=tenant.auth)).json()
    assert mine == {"items": [{"platform": "wechat_miniprogram", "appid": APPID,
                               "secret_set": True}]}
    bad = await gateway.put("/api/credentials/wechat_miniprogram",
                            json={"appid": "nope", "secret": "x"}, headers=rival.auth)
    assert bad.status == 422
    unknown = await gateway.put("/api/credentials/taobao", json={"appid": APPID,
                                "secret": APP_SECRET}, headers=rival.auth)
    assert unknown.status == 404


# --- a real gateway process -----------------------------------------------------------------
@pytest.fixture
async def gateway_process(tmp_path: Path, fake: tuple[FakeWeChat, TestServer],
                          ) -> AsyncIterator[tuple[str, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env.update(LINKLOOP_STORAGE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1",
               LINKLOOP_WECHAT_API_BASE=str(fake[1].make_url("/")))
    assert run(env, "merchant", "create", "acme", "--name", "Acme",
               "--domain", "shop.example.com").returncode == 0
    token = run(env, "token", "--merchant", "acme", "--role", "merchant").stdout.strip()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LINKLOOP, "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.returncode is None and time.monotonic() < deadline
                await asyncio.sleep(0.1)
        yield base, {"Authorization": f"Bearer {token}"}
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def test_first_click_gets_the_url_link_from_a_gateway_process(
    gateway_process: tuple[str, dict[str, str]], fake: tuple[FakeWeChat, TestServer],
) -> None:
    base, auth = gateway_process
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base}/api/credentials/wechat_miniprogram", headers=auth,
                               json={"appid": APPID, "secret": APP_SECRET}) as resp:
            assert resp.status == 200
        async with session.post(f"{base}/api/products", json=PRODUCT, headers=auth) as resp:
            assert resp.status == 201
            product = await resp.json()
        async with session.get(f"{base}/p/{product['code']}", allow_redirects=False,
                               headers={"User-Agent": WECHAT_UA}) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "https://wxaurl.cn/fake1"
    assert len(fake[0].minted) == 1
