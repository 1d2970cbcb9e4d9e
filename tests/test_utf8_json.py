"""JSON answers are UTF-8 text: a merchant reading ``curl`` output sees 明前龙井, not \\u660e."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from .conftest import PRODUCT, REPO, TAOBAO_UA, Tenant

TITLE = "明前龙井 250g"


async def _raw(resp: Any) -> bytes:
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body: bytes = await resp.read()
    assert b"\\u" not in body, body[:200]
    return body


async def test_every_json_answer_is_utf8(client: TestClient[Any, Any], tenant: Tenant,
                                         recorder_flushed: Any) -> None:
    resp = await client.post("/api/products", json=PRODUCT, headers=tenant.auth)
    assert resp.status == 201
    assert TITLE.encode() in await _raw(resp)
    product = await resp.json()
    pid = product["id"]
    for path in ("/api/products", f"/api/products/{pid}"):
        assert TITLE.encode() in await _raw(await client.get(path, headers=tenant.auth))
    patched = await client.patch(f"/api/products/{pid}", json={"title": "碧螺春"},
                                 headers=tenant.auth)
    assert "碧螺春".encode() in await _raw(patched)
    await client.get(f"/p/{product['code']}", headers={"User-Agent": TAOBAO_UA},
                     allow_redirects=False)
    await recorder_flushed()
    stats = await client.get("/api/stats?by=product", headers=tenant.marketing_auth)
    assert "碧螺春".encode() in await _raw(stats)
    # Errors, health and readiness come through the same door.
    missing = await client.get("/api/products/999999", headers=tenant.auth)
    assert missing.status == 404 and b'"not_found"' in await _raw(missing)
    await _raw(await client.get("/readyz"))


def test_no_route_answers_json_but_through_jsonout() -> None:
    # aiohttp's own web.json_response escapes every non-ASCII character by default.
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "gateway").rglob("*.py")
                 if path.name != "jsonout.py"
                 and re.search(r"\bweb\.json_response\(", path.read_text())]
    assert offenders == []
