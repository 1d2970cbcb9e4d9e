"""The merchant and marketing JSON API: products and their links, and the figures."""

from __future__ import annotations

import json
import re
from typing import Any

import segno
from aiohttp import web

from .appkeys import CLOCK, LINKS, PUBLIC_URL, STORE, TOKENS
from .auth import AuthError, Principal
from .catalog import product_json, validate_product
from .errors import ApiError, guarded
from .ids import new_code
from .stats import StatsQueryError, parse_stats_query, rows_csv, stats_answer
from .store import CodeTaken, Credentials, Merchant, Product

__all__ = ["json_body", "principal", "setup_routes"]

_PAGE_DEFAULT = 20
_PAGE_MAX = 100


def principal(request: web.Request, *, write: bool = False) -> Principal:
    """The caller, from ``Authorization: Bearer``; ``write`` refuses read-only roles."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        who = request.app[TOKENS].verify(token.strip())
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if write and not who.can_write:
        raise ApiError(403, "forbidden", f"the {who.role} role cannot change products")
    return who


async def _merchant(request: web.Request, who: Principal) -> Merchant:
    merchant = await request.app[STORE].get_merchant(who.merchant_id)
    if merchant is None:
        raise ApiError(401, "unknown_merchant", "the token's merchant does not exist")
    return merchant


async def json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None


def _product_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such product") from None


async def _own_product(request: web.Request, who: Principal) -> Product:
    # Scoped by merchant: another merchant's product is simply not there (404, not 403).
    product = await request.app[STORE].get_product(who.merchant_id, _product_id(request))
    if product is None:
        raise ApiError(404, "not_found", "no such product")
    return product


async def create_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    merchant = await _merchant(request, who)
    fields = validate_product(await json_body(request), merchant, partial=False)
    store = request.app[STORE]
    slug = fields.pop("slug", None)
    for _attempt in range(5):
        code = slug or new_code()
        try:
            product = await store.create_product(
                who.merchant_id, code=code, title=fields["title"], targets=fields["targets"],
                image_url=fields.get("image_url"), price=fields.get("price"))
            break
        except CodeTaken:
            if slug:
                raise ApiError(409, "slug_taken", f"the slug {slug!r} is taken", "slug") from None
    else:  # five random collisions in a 62^8 space: something is badly wrong
        raise ApiError(503, "unavailable", "could not allocate a share code, try again")
    request.app[LINKS].forget(product.code)
    return web.json_response(product_json(product, request.app[PUBLIC_URL]), status=201)


async def list_products(request: web.Request) -> web.Response:
    who = principal(request)
    try:
        limit = int(request.query.get("limit", _PAGE_DEFAULT))
        after = int(request.query.get("after", 0))
    except ValueError:
        raise ApiError(422, "invalid_field", "limit and after must be integers") from None
    if not 1 <= limit <= _PAGE_MAX:
        raise ApiError(422, "invalid_field", f"limit must be 1 to {_PAGE_MAX}", "limit")
    products = await request.app[STORE].list_products(who.merchant_id, limit=limit + 1,
                                                      after_id=after)
    page = products[:limit]
    base = request.app[PUBLIC_URL]
    return web.json_response({
        "items": [product_json(p, base) for p in page],
        "next": str(page[-1].id) if len(products) > limit else None,
    })


async def read_product(request: web.Request) -> web.Response:
    who = principal(request)
    product = await _own_product(request, who)
    return web.json_response(product_json(product, request.app[PUBLIC_URL]))


async def change_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    merchant = await _merchant(request, who)
    product = await _own_product(request, who)
    if product.retired:
        raise ApiError(409, "product_retired", "a retired product cannot change")
    changes = validate_product(await json_body(request), merchant, partial=True)
    updated = await request.app[STORE].update_product(who.merchant_id, product.id, changes)
    if updated is None:
        raise ApiError(404, "not_found", "no such product")
    request.app[LINKS].forget(product.code)
    return web.json_response(product_json(updated, request.app[PUBLIC_URL]))


async def retire_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    product = await _own_product(request, who)
    updated = await request.app[STORE].update_product(who.merchant_id, product.id,
                                                      {"status": "retired"})
    request.app[LINKS].forget(product.code)
    assert updated is not None
    return web.json_response(product_json(updated, request.app[PUBLIC_URL]))


async def product_qr(request: web.Request) -> web.Response:
    """The share link as a QR code, SVG or PNG; ``?ch=`` tags the link with a channel."""
    who = principal(request)
    product = await _own_product(request, who)
    url = f"{request.app[PUBLIC_URL]}/p/{product.code}"
    channel = request.query.get("ch")
    if channel:
        from .shopper import CHANNEL_PATTERN

        if not CHANNEL_PATTERN.fullmatch(channel):
            raise ApiError(422, "invalid_field", "ch must be 1-32 of a-z, 0-9 and _", "ch")
        url += f"?ch={channel}"
    qr = segno.make(url, error="m")
    if request.match_info["fmt"] == "svg":
        return web.Response(body=qr.svg_inline(scale=8).encode(), content_type="image/svg+xml")
    import io

    out = io.BytesIO()
    qr.save(out, kind="png", scale=8)
    return web.Response(body=out.getvalue(), content_type="image/png")


async def stats(request: web.Request) -> web.Response:
    who = principal(request)
    try:
        query = parse_stats_query(dict(request.query), request.app[CLOCK].today())
    except StatsQueryError as exc:
        raise ApiError(422, "invalid_field", exc.message, exc.field) from None
    timezone = request.app[CLOCK].timezone
    answer = await stats_answer(request.app[STORE], who.merchant_id, query, timezone)
    if request.query.get("format") == "csv":
        return web.Response(
            text=rows_csv(query.by, answer["rows"], timezone), content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition":
                     f'attachment; filename="linkloop-{query.by}-{query.from_day}'
                     f'-{query.to_day}.csv"', "X-LinkLoop-Timezone": timezone})
    entry = await request.app[STORE].get_entry(who.merchant_id)
    # With a static QR, WeCom can't tell us which visit became an add: say so with the rows.
    answer["attribution"] = "none" if entry is None else (
        "visits_only" if entry.kind == "static" else "adds")
    return web.json_response(answer)


# Platforms whose app credentials the gateway uses, with the appid format each expects.
_CREDENTIAL_PLATFORMS = {"wechat_miniprogram": re.compile(r"wx[0-9a-f]{16}")}
_APP_SECRET = re.compile(r"[A-Za-z0-9]{16,64}")


def _credentials_json(credentials: Credentials) -> dict[str, Any]:
    return {"platform": credentials.platform, "appid": credentials.app_id, "secret_set": True}


async def put_credentials(request: web.Request) -> web.Response:
    """A merchant's mini-program appid and secret, used to mint URL Links (write-only)."""
    who = principal(request, write=True)
    platform = request.match_info["platform"]
    appid_format = _CREDENTIAL_PLATFORMS.get(platform)
    if appid_format is None:
        raise ApiError(404, "not_found", f"no app credentials are used for {platform!r}")
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"appid", "secret"}:
        raise ApiError(422, "invalid_field", "send exactly {appid, secret}")
    appid, secret = body["appid"], body["secret"]
    if not isinstance(appid, str) or not appid_format.fullmatch(appid):
        raise ApiError(422, "invalid_field", "appid is not in the platform's format", "appid")
    if not isinstance(secret, str) or not _APP_SECRET.fullmatch(secret):
        raise ApiError(422, "invalid_field", "secret is not in the platform's format", "secret")
    stored = await request.app[STORE].put_credentials(
        Credentials(who.merchant_id, platform, appid, secret))
    return web.json_response(_credentials_json(stored))


async def list_credentials(request: web.Request) -> web.Response:
    who = principal(request)
    found = await request.app[STORE].list_credentials(who.merchant_id)
    return web.json_response({"items": [_credentials_json(c) for c in found]})


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/api/credentials/{platform}", guarded(put_credentials))
    app.router.add_get("/api/credentials", guarded(list_credentials))
    app.router.add_post("/api/products", guarded(create_product))
    app.router.add_get("/api/products", guarded(list_products))
    app.router.add_get(r"/api/products/{id}", guarded(read_product))
    app.router.add_patch(r"/api/products/{id}", guarded(change_product))
    app.router.add_delete(r"/api/products/{id}", guarded(retire_product))
    app.router.add_get(r"/api/products/{id}/qr.{fmt:svg|png}", guarded(product_qr))
    app.router.add_get("/api/stats", guarded(stats))
