"""Hostile but parseable input, on every API route: a 4xx in the JSON shape, nothing stored.

Lone surrogates in any string, NaN and Infinity, numbers no store can keep, deep nesting,
control characters, wrong types, and query parameters that ``int()`` or ``fromisoformat``
would take but mean nothing. Each row is one request; after all of them both merchants' data
is exactly as before, and every shopper route still answers for their products.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import STORE

from .conftest import (
    DESKTOP_UA,
    PRODUCT,
    TAOBAO_UA,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)
from .wait import DEADLINE

HUGE = 99999999999999999999  # past a signed 64-bit integer
ENTRY = {"kind": "static", "qr_url": "https://img.example.com/q.png"}


def _product(**changes: Any) -> dict[str, Any]:
    return {**PRODUCT, **changes}


def _target(platform: str, **fields: Any) -> dict[str, Any]:
    return _product(targets={platform: fields})


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# (method, path, body: JSON value | raw bytes | None, status, code, field). ``{id}`` is a
# product of the caller's own.
ROWS: list[tuple[str, str, Any, int, str, str | None]] = [
    # --- lone surrogates, in every string an API takes -------------------------------------
    ("POST", "/api/products", _product(title="\ud800"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(title="茶\udfff"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(slug="tea-\ud800"), 422, "invalid_field", "slug"),
    ("POST", "/api/products", _product(price="\ud800"), 422, "invalid_field", "price"),
    ("POST", "/api/products", _product(image_url="https://img.example.com/\ud800"), 422,
     "invalid_field", "image_url"),
    ("POST", "/api/products", _target("jd", sku="\udfff"), 422, "invalid_field",
     "targets.jd.sku"),
    ("POST", "/api/products", _target("taobao", item_id="600000000001", share_token="￥\ud83d￥"),
     422, "invalid_field", "targets.taobao.share_token"),
    ("POST", "/api/products", _target("web", url="https://shop.example.com/\ud800"), 422,
     "invalid_field", "targets.web.url"),
    ("POST", "/api/products", _product(targets={"\ud800": {}}), 422, "invalid_field",
     "targets.\\ud800"),
    ("POST", "/api/products", {**PRODUCT, "\udfff": 1}, 422, "invalid_field", "\\udfff"),
    ("PATCH", "/api/products/{id}", {"title": "\ud800"}, 422, "invalid_field", "title"),
    ("PATCH", "/api/products/{id}", {"targets": {"jd": {"sku": "1\ud800"}}}, 422,
     "invalid_field", "targets.jd.sku"),
    ("PUT", "/api/entry", {"kind": "\ud800"}, 422, "invalid_field", "kind"),
    ("PUT", "/api/entry", {"kind": "acquisition_link",
                           "url": "https://work.weixin.qq.com/ca/\ud800"}, 422,
     "invalid_field", "url"),
    ("PUT", "/api/entry", {"kind": "static", "qr_url": "https://img.example.com/\ud800"}, 422,
     "invalid_field", "qr_url"),
    ("PUT", "/api/entry", {"kind": "contact_way", "users": ["ok", "\ud800"]}, 422,
     "invalid_field", "users[1]"),
    ("PUT", "/api/entry", {**ENTRY, "corp_id": "ww\udfff"}, 422, "invalid_field", "corp_id"),
    ("PUT", "/api/credentials/wechat_miniprogram", {"appid": "wx\ud800", "secret": "x" * 32},
     422, "invalid_field", "appid"),
    # --- control characters -----------------------------------------------------------------
    ("POST", "/api/products", _product(title="a\x00b"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(title="line\nbreak"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(title="\x1b[31mred"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(title="next\x85line"), 422, "invalid_field", "title"),
    ("POST", "/api/products", _target("jd", sku="100000000001\x00"), 422, "invalid_field",
     "targets.jd.sku"),
    ("POST", "/api/products", _target("jd", sku="100000000001", share_token="a\x9bb"), 422,
     "invalid_field", "targets.jd.share_token"),
    ("PUT", "/api/entry", {"kind": "static", "qr_url": "https://img.example.com/\x00q.png"},
     422, "invalid_url", "qr_url"),
    # --- numbers: NaN, Infinity, out of every store's range -----------------------------------
    ("POST", "/api/products", b'{"title": "x", "price": NaN, "targets": {"jd": {"sku": "12345"}}}',
     400, "invalid_json", None),
    ("POST", "/api/products", b'{"title": "x", "price": -Infinity, "targets": {}}', 400,
     "invalid_json", None),
    ("POST", "/api/products", b'{"title": "x", "price": 1e400, "targets": {}}', 422,
     "invalid_field", "price"),
    ("POST", "/api/products", _product(price=HUGE), 422, "invalid_field", "price"),
    ("POST", "/api/products", _target("jd", sku=HUGE), 422, "invalid_field", "targets.jd.sku"),
    ("POST", "/api/products", _target("jd", sku=-(2**63)), 422, "invalid_field",
     "targets.jd.sku"),
    ("POST", "/api/products", b'{"title": ' + b"9" * 5000 + b"}", 400, "invalid_json", None),
    ("PUT", "/api/entry", {**ENTRY, "secret": -HUGE}, 422, "invalid_field", "secret"),
    # --- nesting --------------------------------------------------------------------------------
    ("POST", "/api/products", _product(title=_nested(40)), 400, "invalid_json", "title"),
    ("POST", "/api/products", b"[" * 30000 + b"]" * 30000, 400, "invalid_json", None),
    ("PUT", "/api/entry", {"kind": "group", "chat_ids": _nested(20)}, 400, "invalid_json",
     "chat_ids"),
    ("PUT", "/api/credentials/wechat_miniprogram", b'{"appid": ' + b"[" * 20000 + b"]" * 20000
     + b"}", 400, "invalid_json", None),
    # --- bytes that are not UTF-8 JSON ------------------------------------------------------
    ("POST", "/api/products", b'{"title": "\xff"}', 400, "invalid_json", None),
    # A surrogate written as UTF-8 bytes: Python's json decodes it (surrogatepass), the walk
    # refuses it.
    ("POST", "/api/products", b'{"title": "\xed\xa0\x80"}', 422, "invalid_field", "title"),
    ("POST", "/api/products", b"", 400, "invalid_json", None),
    # --- wrong types everywhere ---------------------------------------------------------------
    ("POST", "/api/products", "just a string", 400, "invalid_body", None),
    ("POST", "/api/products", None, 400, "invalid_body", None),
    ("POST", "/api/products", _product(title=5), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(title=["x"]), 422, "invalid_field", "title"),
    ("POST", "/api/products", _product(slug=5), 422, "invalid_field", "slug"),
    ("POST", "/api/products", _product(price={"amount": 1}), 422, "invalid_field", "price"),
    ("POST", "/api/products", _product(price=True), 422, "invalid_field", "price"),
    ("POST", "/api/products", _product(image_url=5), 422, "invalid_url", "image_url"),
    ("POST", "/api/products", _product(targets=[]), 422, "missing_field", "targets"),
    ("POST", "/api/products", _product(targets="jd"), 422, "missing_field", "targets"),
    ("POST", "/api/products", _product(targets={"jd": 5}), 422, "invalid_target",
     "targets.jd"),
    ("POST", "/api/products", _target("jd", sku=["1"]), 422, "invalid_field", "targets.jd.sku"),
    ("POST", "/api/products", _target("jd", sku=1.5), 422, "invalid_field", "targets.jd.sku"),
    ("POST", "/api/products", _target("jd", sku=True), 422, "invalid_field", "targets.jd.sku"),
    ("PATCH", "/api/products/{id}", {"targets": None}, 422, "missing_field", "targets"),
    ("PATCH", "/api/products/{id}", [], 400, "invalid_body", None),
    ("PUT", "/api/entry", [], 400, "invalid_body", None),
    ("PUT", "/api/entry", {"kind": ["static"]}, 422, "invalid_field", "kind"),
    ("PUT", "/api/entry", {"kind": "group", "chat_ids": "wr1"}, 422, "invalid_field",
     "chat_ids"),
    # WeCom's add_join_way takes 5 groups: a sixth would fail at the first shopper's tap.
    ("PUT", "/api/entry", {"kind": "group", "chat_ids": [f"wr{n}" for n in range(6)]}, 422,
     "invalid_field", "chat_ids"),
    ("PUT", "/api/entry", {"kind": "contact_way", "users": [1, 2]}, 422, "invalid_field",
     "users"),
    ("PUT", "/api/entry", {**ENTRY, "encoding_aes_key": 5}, 422, "invalid_field",
     "encoding_aes_key"),
    ("PUT", "/api/credentials/wechat_miniprogram", {"appid": 5, "secret": None}, 422,
     "invalid_field", "appid"),
    # --- path and query integers: ASCII digits in range, or nothing -------------------------
    ("GET", f"/api/products/{HUGE}", None, 404, "not_found", None),
    ("PATCH", f"/api/products/{HUGE}", {"title": "x"}, 404, "not_found", None),
    ("DELETE", f"/api/products/{HUGE}", None, 404, "not_found", None),
    ("GET", f"/api/products/{HUGE}/qr.svg", None, 404, "not_found", None),
    ("GET", "/api/products/1_0", None, 404, "not_found", None),
    ("GET", "/api/products/%D9%A1", None, 404, "not_found", None),  # an Arabic-Indic 1
    ("GET", "/api/products/-1", None, 404, "not_found", None),
    ("GET", "/api/products/+1", None, 404, "not_found", None),
    ("GET", f"/api/products?after={HUGE}", None, 422, "invalid_field", "after"),
    ("GET", "/api/products?after=-1", None, 422, "invalid_field", "after"),
    ("GET", "/api/products?after=1_0", None, 422, "invalid_field", "after"),
    ("GET", "/api/products?limit=%D9%A1", None, 422, "invalid_field", "limit"),
    ("GET", "/api/products?limit=%201", None, 422, "invalid_field", "limit"),
    ("GET", "/api/products?limit=0", None, 422, "invalid_field", "limit"),
    ("GET", f"/api/products?limit={HUGE}", None, 422, "invalid_field", "limit"),
    ("GET", f"/api/stats?product={HUGE}", None, 422, "invalid_field", "product"),
    ("GET", "/api/stats?product=1_0", None, 422, "invalid_field", "product"),
    ("GET", "/api/stats?from=20260131", None, 422, "invalid_field", "from"),
    ("GET", "/api/stats?from=2026-W05-6", None, 422, "invalid_field", "from"),
    ("GET", "/api/stats?to=0001-01-05", None, 422, "invalid_field", "to"),
    ("GET", "/api/stats?from=0001-01-01&to=9999-12-31", None, 422, "invalid_field", "from"),
    ("GET", "/api/stats?by=%ED%A0%80", None, 422, "invalid_field", "by"),
    ("GET", "/api/stats?platform=%ED%A0%80", None, 422, "invalid_field", "platform"),
    ("GET", "/api/stats?channel=%00", None, 422, "invalid_field", "channel"),
    ("GET", "/api/stats?format=xml", None, 422, "invalid_field", "format"),
    ("GET", "/api/products/{id}/qr.svg?ch=%00", None, 422, "invalid_field", "ch"),
    ("GET", "/api/products/{id}/qr.png?ch=%E8%8C%B6", None, 422, "invalid_field", "ch"),
    # --- WeCom reads the callback's answers: JSON, whatever the method or path ---------------
    ("PUT", "/wecom/callback/acme", {}, 405, "method_not_allowed", None),
    ("DELETE", "/wecom/callback/acme", None, 405, "method_not_allowed", None),
    ("GET", "/wecom/callback", None, 404, "not_found", None),
]


async def _snapshot(client: TestClient[Any, Any], tenants: list[Tenant]) -> list[Any]:
    assert client.app is not None
    store = client.app[STORE]
    found: list[Any] = []
    for tenant in tenants:
        found.append(await store.list_products(tenant.id, limit=1000, after_id=0))
        found.append(await store.get_entry(tenant.id))
        found.append(await store.list_credentials(tenant.id))
    return found


async def _send(client: TestClient[Any, Any], tenant: Tenant, method: str, path: str,
                body: Any) -> Any:
    headers = {**tenant.auth, "Content-Type": "application/json"}
    if body is None and method in ("GET", "DELETE"):
        return await client.request(method, path, headers=tenant.auth)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.request(method, path, data=data, headers=headers)


@pytest.fixture
async def two(client: TestClient[Any, Any]) -> tuple[Tenant, Tenant, dict[str, Any]]:
    acme = await add_tenant(client, "acme")
    rival = await add_tenant(client, "rival")
    product = await create_product(client, acme)
    await create_product(client, rival, {**PRODUCT, "title": "对手的茶"})
    for tenant in (acme, rival):
        resp = await client.put("/api/entry", json={
            "kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawgood"},
            headers=tenant.auth)
        assert resp.status == 200
    return acme, rival, product


async def test_hostile_input_gets_a_4xx_and_changes_nothing(
    client: TestClient[Any, Any], two: tuple[Tenant, Tenant, dict[str, Any]],
) -> None:
    acme, rival, product = two
    before = await _snapshot(client, [acme, rival])
    wrong = []
    for n, (method, path, body, status, code, field) in enumerate(ROWS):
        resp = await _send(client, acme, method, path.replace("{id}", str(product["id"])), body)
        try:
            answer = await resp.json(content_type=None)
        except ValueError:
            answer = {"not json": await resp.text()}
        error = answer.get("error", {})
        got = (resp.status, error.get("code"), error.get("field"))
        if got != (status, code, field) or not error.get("message"):
            wrong.append((n, method, ascii(path)[:60], ascii(body)[:60], got))
    assert not wrong, "\n".join(map(str, wrong))
    assert await _snapshot(client, [acme, rival]) == before
    # Every shopper route still answers for both merchants' products.
    listing = await (await client.get("/api/products", headers=rival.auth)).json()
    for code in (product["code"], listing["items"][0]["code"]):
        assert (await client.get(f"/p/{code}", headers={"User-Agent": DESKTOP_UA})).status == 200
        hop = await client.get(f"/o/{code}/jd", allow_redirects=False,
                               headers={"User-Agent": DESKTOP_UA})
        assert hop.status == 302 and hop.headers["Location"].startswith("https://item.m.jd.com/")
        entry = await client.get(f"/e/{code}", allow_redirects=False,
                                 headers={"User-Agent": TAOBAO_UA})
        assert entry.status == 302
        assert entry.headers["Location"].startswith("https://work.weixin.qq.com/ca/cawgood?")


async def test_plain_titles_and_big_but_valid_numbers_still_pass(
    client: TestClient[Any, Any], two: tuple[Tenant, Tenant, dict[str, Any]],
) -> None:
    """The checks refuse what is broken, not what is unusual."""
    acme, _, product = two
    made = await create_product(client, acme, _product(
        title="=HYPERLINK(\"x\") 😀 茶 — “quoted”", price=99999999.99,
        targets={"jd": {"sku": 100000000001}}))
    assert made["title"] == "=HYPERLINK(\"x\") 😀 茶 — “quoted”"
    assert made["targets"]["jd"]["sku"] == "100000000001"
    assert made["price"] == "99999999.99"
    page = await client.get(f"/api/products?limit=100&after={product['id']}",
                            headers=acme.auth)
    assert [p["id"] for p in (await page.json())["items"]] == [made["id"]]
    figures = await client.get(f"/api/stats?product={made['id']}&from=2026-01-01&to=2026-01-31",
                               headers=acme.auth)
    assert figures.status == 200


async def _raw(client: TestClient[Any, Any], head: bytes,
               body: bytes = b"") -> tuple[int, bytes, bytes]:
    """One request as raw bytes (aiohttp's client would not send these), and the answer."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), headers.lower(), body


async def test_odd_bytes_in_a_path_or_a_token_get_the_json_error(
    client: TestClient[Any, Any], two: tuple[Tenant, Tenant, dict[str, Any]],
) -> None:
    """Found by the fuzz suite: a path that decodes to a line break fell through to
    aiohttp's plain-text 404, and a token that is not UTF-8 was a 500."""
    acme = two[0]
    for path in (b"/api/products/%0A%7B", b"/api/%0A", b"/api/stats/%0D"):
        status, headers, body = await _raw(client, b"GET " + path + b" HTTP/1.1\r\n")
        assert status == 404 and b"application/json" in headers, (path, body)
        assert json.loads(body)["error"]["code"] == "not_found"
    for token in (b"\xff\xfe", b"\xed\xa0\x80", acme.token.encode() + b"\x80"):
        status, headers, body = await _raw(
            client, b"GET /api/products HTTP/1.1\r\nAuthorization: Bearer " + token + b"\r\n")
        assert status == 401 and b"application/json" in headers, (token, body)
        assert json.loads(body)["error"]["code"] == "invalid_token"


async def test_a_dashboard_cookie_that_is_not_utf8_is_no_session(
    client: TestClient[Any, Any],
) -> None:
    """The session and login-form cookies as bytes that are not UTF-8: signed out, not a 500."""
    for cookie in (b"ll_session=\xff\xfe", b"ll_session=a.b.\xed\xa0\x80"):
        status, headers, _ = await _raw(client, b"GET /dashboard HTTP/1.1\r\nCookie: " + cookie
                                        + b"\r\n")
        assert status == 303 and b"location: /dashboard/login" in headers, cookie
    login = await client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await login.text())
    assert csrf is not None
    form = f"csrf={csrf.group(1)}&email=a%40b.cn&password=x".encode()
    status, _, body = await _raw(client, (
        b"POST /dashboard/login HTTP/1.1\r\nOrigin: https://go.test\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Cookie: ll_login_csrf=\xff\xfe\r\nContent-Length: " + str(len(form)).encode()
        + b"\r\n"), form)
    assert status == 403, body


async def test_a_body_that_says_gzip_and_is_not_is_a_400_and_changes_nothing(
    client: TestClient[Any, Any], two: tuple[Tenant, Tenant, dict[str, Any]],
) -> None:
    """Found by the hostile sweep: ``Content-Encoding: gzip`` over bytes that are not gzip
    made aiohttp raise RequestPayloadError out of ``request.read()``, answered 500."""
    acme, rival, _ = two
    before = await _snapshot(client, [acme, rival])
    body = json.dumps({**PRODUCT, "title": "压缩的茶"}).encode()  # a good body, not gzipped
    for path, content_type in (("/api/products", "application/json"),
                               ("/api/products/import?dry_run=false", "text/csv"),
                               ("/api/entry", "application/json")):
        for encoding in ("gzip", "deflate"):
            method = "PUT" if path == "/api/entry" else "POST"
            resp = await client.request(method, path, data=body, headers={
                **acme.auth, "Content-Type": content_type, "Content-Encoding": encoding})
            assert resp.status == 400, (path, encoding, await resp.text())
            assert (await resp.json())["error"]["code"] == "bad_request"
    assert await _snapshot(client, [acme, rival]) == before


async def _answer_of(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One HTTP answer read off a connection (its head, then Content-Length bytes): the
    server may keep the connection a while after it, reading what is left of the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return int(head.split()[1]), head.lower(), body


async def test_a_body_that_stops_arriving_is_a_408_and_nothing_waits_for_it(
    aiohttp_client: Any, tmp_path: Path,
) -> None:
    """Found by the hostile sweep: a handler reading a body waited for ever on a client that
    stopped sending, and on a chunked body whose framing broke after the handler began to
    read it (aiohttp queues that error as a next request; the body being read never ends)."""
    client = await aiohttp_client(create_app(make_settings(tmp_path,
                                                           server__body_idle_seconds=0.5)))
    acme = await add_tenant(client, "acme")
    rival = await add_tenant(client, "rival")
    product = await create_product(client, acme)
    await create_product(client, rival, {**PRODUCT, "title": "对手的茶"})
    before = await _snapshot(client, [acme, rival])
    auth = f"Authorization: {acme.auth['Authorization']}\r\n".encode()
    body = json.dumps({**PRODUCT, "title": "慢慢来的茶"}).encode()
    # (the head and the bytes sent at once, the bytes sent once the handler reads the body)
    stalls = {
        "API body short of its length": (
            b"POST /api/products HTTP/1.1\r\n" + auth + b"Content-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body) + body[:20], b""),
        "chunked API body broken after its first chunk": (
            b"POST /api/products HTTP/1.1\r\n" + auth + b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % 20 + body[:20] + b"\r\n",
            b"zz\r\n"),
        "import short of its length": (
            b"POST /api/products/import HTTP/1.1\r\n" + auth + b"Content-Type: text/csv\r\n"
            b"Content-Length: 1000\r\n\r\ntitle,targets.jd.sku\n", b""),
        "login form short of its length": (
            b"POST /dashboard/login HTTP/1.1\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a", b""),
    }
    assert client.server.port is not None
    opened = []
    for head, _ in stalls.values():
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(head.replace(b"\r\n\r\n", b"\r\nHost: a\r\n\r\n", 1))
        await writer.drain()
        opened.append((reader, writer))
    # Meanwhile a shopper's link answers as ever; by its answer, the handlers above are
    # reading their bodies (the broken chunk must come after that, or aiohttp's parser
    # refuses it before any handler runs).
    assert (await client.get(f"/p/{product['code']}", headers={"User-Agent": DESKTOP_UA},
                             allow_redirects=False)).status == 200
    for (_, later), (_, writer) in zip(stalls.values(), opened, strict=True):
        writer.write(later)
        await writer.drain()
    for what, (reader, writer) in zip(stalls, opened, strict=True):
        status, head, answer = await asyncio.wait_for(_answer_of(reader), DEADLINE)
        writer.close()
        assert (status, b"connection: close" in head) == (408, True), (what, head, answer)
        if b"application/json" in head:
            assert json.loads(answer)["error"]["code"] == "request_timeout", what
        else:
            assert what.startswith("login") and b"text/html" in head, (what, head)
    assert await _snapshot(client, [acme, rival]) == before
