"""Mini-program URL Links minted through a fake WeChat API, never at a shopper's expense."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.appkeys import MINIPROGRAM_LINKS

from .conftest import add_tenant, make_settings
from .fake_wechat import APP_SECRET, APPID, FakeWeChat

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 "
             "MicroMessenger/8.0.40(0x18002831) NetType/WIFI")
PRODUCT = {"title": "礼盒", "targets": {
    "wechat_miniprogram": {"appid": APPID, "path": "pages/item/index", "query": "id=42"},
    "web": {"url": "https://shop.example.com/gift"}}}
PLAIN = "weixin://dl/business/?appid=wx0123456789abcdef&path=pages/item/index&query=id%3D42"


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeWeChat, TestServer]:
    wechat = FakeWeChat()
    return wechat, await aiohttp_server(wechat.app())


@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path,
                  fake: tuple[FakeWeChat, TestServer]) -> TestClient[Any, Any]:
    settings = make_settings(tmp_path, wechat__api_base=str(fake[1].make_url("/")),
                             wechat__timeout_seconds=0.5)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def _product_with_credentials(gateway: TestClient[Any, Any], secret: str = APP_SECRET,
                                    ) -> str:
    tenant = await add_tenant(gateway, "acme")
    resp = await gateway.put("/api/credentials/wechat_miniprogram",
                             json={"appid": APPID, "secret": secret}, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    shown = await resp.json()
    assert shown == {"platform": "wechat_miniprogram", "appid": APPID, "secret_set": True}
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=tenant.auth)).json()
    code: str = product["code"]
    return code


async def _open(gateway: TestClient[Any, Any], code: str) -> str:
    resp = await gateway.get(f"/p/{code}", headers={"User-Agent": WECHAT_UA},
                             allow_redirects=False)
    assert resp.status == 302
    location: str = resp.headers["Location"]
    return location


async def _minted(gateway: TestClient[Any, Any]) -> None:
    assert gateway.app is not None
    await gateway.app[MINIPROGRAM_LINKS].wait()


async def test_first_click_never_waits_then_the_url_link_is_used(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    code = await _product_with_credentials(gateway)
    assert await _open(gateway, code) == PLAIN  # no link yet: the plain-text scheme
    await _minted(gateway)
    for _ in range(3):
        assert await _open(gateway, code) == "https://wxaurl.cn/fake1"
    assert wechat.minted == [{"path": "pages/item/index", "query": "id=42", "expire_type": 1,
                              "expire_interval": 30}]
    assert wechat.tokens_issued == 1


async def test_expired_token_is_refreshed_once(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer],
) -> None:
    wechat, _ = fake
    code = await _product_with_credentials(gateway)
    wechat.expire_token_once = True
    await _open(gateway, code)
    await _minted(gateway)
    assert await _open(gateway, code) == "https://wxaurl.cn/fake1"
    assert wechat.tokens_issued == 2


@pytest.mark.parametrize("knob", ["errcode", "timeout", "bad_secret"])
async def test_api_failures_fall_back_to_the_plain_scheme(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeChat, TestServer], knob: str,
) -> None:
    wechat, _ = fake
    if knob == "errcode":
        wechat.fail_with = 85401
    elif knob == "timeout":
        wechat.delay = 2.0
    code = await _product_with_credentials(
        gateway, secret="wrong0123456789abcdef0123456789ab" if knob == "bad_secret"
        else APP_SECRET)
    for _ in range(2):
        assert await _open(gateway, code) == PLAIN
        await _minted(gateway)
    assert wechat.minted == []


async def test_credentials_are_write_only_and_scoped(gateway: TestClient[Any, Any]) -> None:
    await _product_with_credentials(gateway)
    tenant = await add_tenant(gateway, "rival")
    listing = await (await gateway.get("/api/credentials", headers=tenant.auth)).json()
    assert listing == {"items": []}
    bad = await gateway.put("/api/credentials/wechat_miniprogram",
                            json={"appid": "nope", "secret": "x"}, headers=tenant.auth)
    assert bad.status == 422
    unknown = await gateway.put("/api/credentials/taobao", json={"appid": APPID,
                                "secret": APP_SECRET}, headers=tenant.auth)
    assert unknown.status == 404
