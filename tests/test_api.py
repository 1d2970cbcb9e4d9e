"""The merchant API over loopback: products, validation errors, roles, tenant isolation."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.ids import BASE62

from .conftest import PRODUCT, Tenant, add_tenant, create_product


async def test_create_returns_share_link_and_validated_targets(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    assert product["share_url"] == f"https://go.test/p/{product['code']}"
    # Without a slug: 8 random base62 characters (47 bits, too many to guess a link).
    assert len(product["code"]) == 8 and set(product["code"]) <= set(BASE62)
    assert product["price"] == "168.00"
    assert product["targets"]["taobao"]["item_id"] == "600000000001"
    assert product["status"] == "active"


async def test_codes_are_unique_and_slug_is_used(client: TestClient[Any, Any], tenant: Tenant) -> None:
    codes = {(await create_product(client, tenant))["code"] for _ in range(5)}
    assert len(codes) == 5
    slugged = await create_product(client, tenant, {**PRODUCT, "slug": "longjing-2026"})
    assert slugged["code"] == "longjing-2026"
    resp = await client.post("/api/products", json={**PRODUCT, "slug": "longjing-2026"},
                             headers=tenant.auth)
    assert resp.status == 409
    assert (await resp.json())["error"] == {
        "code": "slug_taken", "message": "the slug 'longjing-2026' is taken", "field": "slug"}


async def _error(resp: Any) -> dict[str, Any]:
    body = await resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


BAD_BODIES = [
    ({**PRODUCT, "targets": {"myspace": {"url": "https://x"}}}, 422, "unknown_platform",
     "targets.myspace"),
    ({**PRODUCT, "targets": {"taobao": {}}}, 422, "missing_field", "targets.taobao"),
    ({**PRODUCT, "targets": {"taobao": {"item_id": "abc"}}}, 422, "invalid_field",
     "targets.taobao.item_id"),
    ({**PRODUCT, "targets": {"web": {"url": "javascript:alert(1)"}}}, 422, "invalid_url",
     "targets.web.url"),
    ({**PRODUCT, "targets": {"web": {"url": "https://evil.example.net/x"}}}, 422,
     "host_not_allowed", "targets.web.url"),
    ({**PRODUCT, "targets": {"jd": {"sku": "1000001", "url": "https://evil.example.net/"}}},
     422, "host_not_allowed", "targets.jd.url"),
    ({**PRODUCT, "targets": {}}, 422, "missing_field", "targets"),
    ({**PRODUCT, "title": ""}, 422, "invalid_field", "title"),
    ({**PRODUCT, "price": -1}, 422, "invalid_field", "price"),
    ({**PRODUCT, "price": "1.234"}, 422, "invalid_field", "price"),
    ({**PRODUCT, "image_url": "http://img.example.com/x.jpg"}, 422, "invalid_url",
     "image_url"),
    ({**PRODUCT, "slug": "a b"}, 422, "invalid_field", "slug"),
    ({**PRODUCT, "colour": "red"}, 422, "unknown_field", "colour"),
    ([1, 2], 400, "invalid_body", None),
]


async def test_bad_product_bodies_get_stable_codes_and_change_nothing(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    for body, status, code, field in BAD_BODIES:
        resp = await client.post("/api/products", json=body, headers=tenant.auth)
        error = await _error(resp)
        assert (resp.status, error["code"], error.get("field")) == (status, code, field), body
        assert error["message"]
    listing = await (await client.get("/api/products", headers=tenant.auth)).json()
    assert listing["items"] == []


async def test_malformed_and_oversized_requests(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.post("/api/products", data=b"{not json",
                             headers={**tenant.auth, "Content-Type": "application/json"})
    assert resp.status == 400 and (await _error(resp))["code"] == "invalid_json"
    resp = await client.post("/api/products", data=b"title=x", headers={
        **tenant.auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415 and (await _error(resp))["code"] == "unsupported_media_type"
    huge = {**PRODUCT, "title": "x" * 100_000}
    resp = await client.post("/api/products", json=huge, headers=tenant.auth)
    assert resp.status == 413 and (await _error(resp))["code"] == "body_too_large"
    resp = await client.put("/api/products", json=PRODUCT, headers=tenant.auth)
    assert resp.status == 405 and (await _error(resp))["code"] == "method_not_allowed"
    resp = await client.get("/api/nothing-here", headers=tenant.auth)
    assert resp.status == 404 and (await _error(resp))["code"] == "not_found"


async def test_tokens_are_required_and_checked(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.get("/api/products")
    assert resp.status == 401 and (await _error(resp))["code"] == "unauthorized"
    resp = await client.get("/api/products", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401 and (await _error(resp))["code"] == "invalid_token"
    assert client.app is not None
    from gateway.appkeys import TOKENS

    expired = client.app[TOKENS].mint("acme", "merchant", -10)
    resp = await client.get("/api/products", headers={"Authorization": f"Bearer {expired}"})
    assert resp.status == 401 and (await _error(resp))["code"] == "token_expired"
    import jwt

    forged = jwt.encode({"sub": "acme", "role": "admin", "aud": "linkloop", "exp": 2**40},
                        "not-the-secret-but-long-enough-for-hs256", algorithm="HS256")
    resp = await client.get("/api/products", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401


async def test_marketing_reads_but_cannot_change(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    resp = await client.post("/api/products", json=PRODUCT, headers=tenant.marketing_auth)
    assert resp.status == 403 and (await _error(resp))["code"] == "forbidden"
    resp = await client.patch(f"/api/products/{product['id']}", json={"title": "x"},
                              headers=tenant.marketing_auth)
    assert resp.status == 403
    resp = await client.delete(f"/api/products/{product['id']}", headers=tenant.marketing_auth)
    assert resp.status == 403
    assert (await client.get("/api/stats", headers=tenant.marketing_auth)).status == 200
    assert (await client.get(f"/api/products/{product['id']}",
                             headers=tenant.marketing_auth)).status == 200


async def test_list_is_paginated(client: TestClient[Any, Any], tenant: Tenant) -> None:
    made = [(await create_product(client, tenant))["id"] for _ in range(5)]
    seen: list[int] = []
    url = "/api/products?limit=2"
    while True:
        page = await (await client.get(url, headers=tenant.auth)).json()
        seen += [p["id"] for p in page["items"]]
        assert len(page["items"]) <= 2
        if page["next"] is None:
            break
        url = f"/api/products?limit=2&after={page['next']}"
    assert seen == made
    resp = await client.get("/api/products?limit=1000", headers=tenant.auth)
    assert resp.status == 422


async def test_change_and_retire(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    url = f"/api/products/{product['id']}"
    resp = await client.patch(url, json={"title": "新茶", "targets": {"jd": {"sku": "12345"}}},
                              headers=tenant.auth)
    assert resp.status == 200
    changed = await resp.json()
    assert changed["title"] == "新茶" and changed["targets"] == {"jd": {"sku": "12345"}}
    assert changed["code"] == product["code"]
    resp = await client.patch(url, json={"slug": "other"}, headers=tenant.auth)
    assert resp.status == 422 and (await _error(resp))["code"] == "immutable_field"
    resp = await client.patch(url, json={"targets": {"taobao": {"item_id": "x"}}},
                              headers=tenant.auth)
    assert resp.status == 422
    assert (await (await client.get(url, headers=tenant.auth)).json())["title"] == "新茶"
    resp = await client.delete(url, headers=tenant.auth)
    assert resp.status == 200 and (await resp.json())["status"] == "retired"
    assert (await client.get(f"/p/{product['code']}", allow_redirects=False)).status == 410
    resp = await client.patch(url, json={"title": "again"}, headers=tenant.auth)
    assert resp.status == 409 and (await _error(resp))["code"] == "product_retired"


async def test_another_merchant_sees_nothing(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    await client.get(f"/p/{product['code']}", allow_redirects=False)
    other = await add_tenant(client, "rival")
    url = f"/api/products/{product['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        resp = await client.request(method, url, json={"title": "mine now"}, headers=other.auth)
        assert resp.status == 404, method
        assert (await _error(resp))["code"] == "not_found"
    assert (await client.get(f"{url}/qr.svg", headers=other.auth)).status == 404
    listing = await (await client.get("/api/products", headers=other.auth)).json()
    assert listing["items"] == []
    from gateway.appkeys import RECORDER

    assert client.app is not None
    await client.app[RECORDER].flush()
    for by in ("platform", "product", "day"):
        theirs = await (await client.get(f"/api/stats?by={by}", headers=other.auth)).json()
        assert theirs["rows"] == [], by
        ours = await (await client.get(f"/api/stats?by={by}", headers=tenant.auth)).json()
        assert ours["rows"], by
    # the product is untouched
    still = await (await client.get(url, headers=tenant.auth)).json()
    assert still["title"] == PRODUCT["title"] and still["status"] == "active"


async def test_qr_code_of_the_share_link(client: TestClient[Any, Any], tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    svg = await client.get(f"/api/products/{product['id']}/qr.svg", headers=tenant.auth)
    assert svg.status == 200 and svg.content_type == "image/svg+xml"
    assert (await svg.text()).startswith("<svg")
    png = await client.get(f"/api/products/{product['id']}/qr.png?ch=poster",
                           headers=tenant.auth)
    assert png.status == 200 and (await png.read()).startswith(b"\x89PNG")
    bad = await client.get(f"/api/products/{product['id']}/qr.png?ch=<x>", headers=tenant.auth)
    assert bad.status == 422
