"""The merchant and marketing JSON API: products and their links, and the figures."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import segno
from aiohttp import web

from adapters.wechat_miniprogram import PLAIN_SCHEME_NOTE

from . import products
from .appkeys import (
    CLOCK,
    JSSDK,
    LINKS,
    MINIPROGRAM_LINKS,
    PUBLIC_URL,
    SETTINGS,
    STORE,
    TOKENS,
)
from .auth import AuthError, Principal
from .catalog import product_json, share_url
from .errors import ApiError, guarded
from .inputs import body_idle, parse_json, parse_uint, plain_text, read_body
from .jsonout import json_response
from .params import ChoiceParam, IntParam, PatternParam
from .products import product_by_id
from .stats import CHANNEL_PATTERN, StatsQueryError, parse_stats_query, rows_csv, stats_answer
from .store import PRODUCT_STATES, Credentials, Merchant, Product, ProductState

__all__ = ["PAGE_AFTER", "PAGE_LIMIT", "QR_CHANNEL", "STATS_FORMAT", "after_save",
           "answer_product", "json_body", "merchant_of", "own_product", "principal",
           "product_filters", "setup_routes"]

_JWT_TEXT = re.compile(r"[A-Za-z0-9_=.-]{1,4096}")
_PAGE_DEFAULT = 20
_MINI = "wechat_miniprogram"
_PAGE_MAX = 100

# Query parameters read through objects that also describe them (gateway/openapi.py).
PAGE_LIMIT = IntParam("limit", "Products per page.", default=_PAGE_DEFAULT, minimum=1,
                      maximum=_PAGE_MAX)
PAGE_AFTER = IntParam("after", "The previous page's `next`: products after this id.")
QR_CHANNEL = PatternParam("ch", "Tag the link with this `?ch=` channel.",
                          pattern=CHANNEL_PATTERN, rule="1-32 of a-z, 0-9 and _")
STATS_FORMAT = ChoiceParam("format", "`csv` answers the rows as a spreadsheet.",
                           choices=("json", "csv"), default="json")


def principal(request: web.Request, *, write: bool = False) -> Principal:
    """The caller, from ``Authorization: Bearer``; ``write`` refuses read-only roles."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    token = token.strip()
    # A JWT is base64url and dots. aiohttp hands other bytes on as lone surrogates, which
    # the JWT library cannot even encode (a 500 before this check).
    if not _JWT_TEXT.fullmatch(token):
        raise ApiError(401, "invalid_token", "the token is not a JWT")
    try:
        who = request.app[TOKENS].verify(token)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if write and not who.can_write:
        raise ApiError(403, "forbidden", f"the {who.role} role cannot change products")
    return who


async def merchant_of(request: web.Request, who: Principal) -> Merchant:
    """The token's merchant; 401 when it does not exist (a token minted against another
    database with the same secret), before anything is written in its name."""
    merchant = await request.app[STORE].get_merchant(who.merchant_id)
    if merchant is None:
        raise ApiError(401, "unknown_merchant", "the token's merchant does not exist")
    return merchant


async def json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    return parse_json(await read_body(request.content.iter_any(), limit=request.client_max_size,
                                      seconds=body_idle(request)))


def _product_id(request: web.Request) -> int | None:
    # Only ASCII digits in the stores' range name a product; anything else names none.
    return parse_uint(request.match_info["id"])


async def own_product(request: web.Request, who: Principal) -> Product:
    """The product the path names, if it is the caller's merchant's (else 404, not 403)."""
    return await product_by_id(request.app[STORE], who.merchant_id, _product_id(request))


async def answer_product(request: web.Request, product: Product) -> web.Response:
    """A product changed as JSON, after dropping its share link from this process's cache."""
    request.app[LINKS].forget(product.code)
    return json_response(await _product_answer(request, product))


async def create_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    merchant = await merchant_of(request, who)
    product = await products.create_product(request.app[STORE], merchant,
                                            await json_body(request), zone=request.app[CLOCK].zone)
    await after_save(request.app, product)
    return json_response(await _product_answer(request, product), status=201)


async def list_products(request: web.Request) -> web.Response:
    """A page of products; ``q`` searches title and code, ``state`` keeps one state."""
    who = principal(request)
    limit = PAGE_LIMIT.parse(request)
    after = PAGE_AFTER.parse(request)
    search, state = product_filters(request.query)
    found = await request.app[STORE].list_products(
        who.merchant_id, limit=limit + 1, after_id=after, search=search, state=state,
        now=time.time())
    page = found[:limit]
    base, zone = request.app[PUBLIC_URL], request.app[CLOCK].zone
    return json_response({
        "items": [product_json(p, base, zone=zone) for p in page],
        "next": str(page[-1].id) if len(found) > limit else None,
    })


def product_filters(query: Mapping[str, str]) -> tuple[str | None, ProductState | None]:
    """``q`` (at most 100 characters of plain text) and ``state`` (one of PRODUCT_STATES)."""
    search = query.get("q", "").strip() or None
    if search is not None:
        search = plain_text(search, "q", 100)
    state = query.get("state") or None
    if state is not None and state not in PRODUCT_STATES:
        raise ApiError(422, "invalid_field", f"state must be one of {', '.join(PRODUCT_STATES)}",
                       "state")
    return search, state


async def read_product(request: web.Request) -> web.Response:
    who = principal(request)
    product = await own_product(request, who)
    return json_response(await _product_answer(request, product))


async def change_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    merchant = await merchant_of(request, who)
    product = await own_product(request, who)
    updated = await products.update_product(request.app[STORE], merchant, product,
                                            await json_body(request),
                                            zone=request.app[CLOCK].zone)
    await after_save(request.app, updated, before=product)
    return json_response(await _product_answer(request, updated))


async def after_save(app: web.Application, product: Product, *,
                     before: Product | None = None, wait: bool = True) -> None:
    """What follows a product saved (from the API or the console): this process drops its
    cached link, and a WeChat mini-program target gets its URL Link, scheme and code now,
    before any shopper asks (waiting for WeChat a moment, the rest in the background)."""
    app[LINKS].forget(product.code)
    if _MINI in product.targets or (before is not None and _MINI in before.targets):
        await app[MINIPROGRAM_LINKS].product_saved(
            product, wait=app[SETTINGS]["wechat.timeout_seconds"] + 1 if wait else None)


async def _product_answer(request: web.Request, product: Product) -> dict[str, Any]:
    """The product as the API shows it; with a WeChat mini-program target, what was minted
    for it and, when nothing can be, why the plain-text scheme may not open."""
    answer = product_json(product, request.app[PUBLIC_URL], zone=request.app[CLOCK].zone)
    target = product.targets.get(_MINI)
    if target is None:
        return answer
    store = request.app[STORE]
    minted = {m.kind: m for m in await store.minted(product.merchant_id, product.code)}
    answer["minted"] = {kind: {
        "value": (f"{request.app[PUBLIC_URL]}/p/{product.code}/miniprogram-code"
                  if kind == "wxacode" and m.value else m.value),
        "expires_at": m.expires_at or None, "error": m.error} for kind, m in minted.items()}
    credentials = await store.get_credentials(product.merchant_id, _MINI)
    if credentials is None or credentials.app_id != target.get("appid"):
        answer["notes"] = [{"code": "plain_scheme_declared_paths_only",
                            "field": f"targets.{_MINI}.path", "message": PLAIN_SCHEME_NOTE}]
    return answer


async def retire_product(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    product = await own_product(request, who)
    return await answer_product(request, await products.retire_product(request.app[STORE],
                                                                        product))


async def restore_product(request: web.Request) -> web.Response:
    """A retired product comes back with the same code (and the same printed QR codes)."""
    who = principal(request, write=True)
    product = await own_product(request, who)
    restored = await products.restore_product(request.app[STORE], product)
    await after_save(request.app, restored)  # links minted before may have run out meanwhile
    return json_response(await _product_answer(request, restored))


async def product_qr(request: web.Request) -> web.Response:
    """The share link as a QR code, SVG or PNG; ``?ch=`` tags the link with a channel."""
    who = principal(request)
    product = await own_product(request, who)
    url = share_url(request.app[PUBLIC_URL], product.code, QR_CHANNEL.parse(request) or "")
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
    answer_format = STATS_FORMAT.parse(request)
    timezone = request.app[CLOCK].timezone
    answer = await stats_answer(request.app[STORE], who.merchant_id, query, timezone)
    if answer_format == "csv":
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
    return json_response(answer)


# Platforms whose app credentials the gateway uses, with the appid format each expects: the
# mini-program's (to mint URL Links, schemes and codes) and the official account's (to sign
# the JS-SDK config of the open tag wx-open-launch-weapp).
_CREDENTIAL_PLATFORMS = {"wechat_miniprogram": re.compile(r"wx[0-9a-f]{16}"),
                         "wechat_official_account": re.compile(r"wx[0-9a-f]{16}")}
_APP_SECRET = re.compile(r"[A-Za-z0-9]{16,64}")


def _credentials_json(credentials: Credentials) -> dict[str, Any]:
    return {"platform": credentials.platform, "appid": credentials.app_id, "secret_set": True}


async def put_credentials(request: web.Request) -> web.Response:
    """A merchant's mini-program or official account appid and secret (write-only)."""
    who = principal(request, write=True)
    await merchant_of(request, who)
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
    if platform == _MINI:  # every product of the merchant gets its links, in the background
        request.app[MINIPROGRAM_LINKS].backfill(who.merchant_id)
    else:  # the open tag works from the next page on: fetch the JS-SDK ticket now
        await asyncio.wait({asyncio.ensure_future(request.app[JSSDK].warm(who.merchant_id))},
                           timeout=request.app[SETTINGS]["wechat.timeout_seconds"] + 1)
    return json_response(_credentials_json(stored))


async def list_credentials(request: web.Request) -> web.Response:
    who = principal(request)
    found = await request.app[STORE].list_credentials(who.merchant_id)
    return json_response({"items": [_credentials_json(c) for c in found]})


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/api/credentials/{platform}", guarded(put_credentials))
    app.router.add_get("/api/credentials", guarded(list_credentials))
    app.router.add_post("/api/products", guarded(create_product))
    app.router.add_get("/api/products", guarded(list_products))
    app.router.add_get(r"/api/products/{id}", guarded(read_product))
    app.router.add_patch(r"/api/products/{id}", guarded(change_product))
    app.router.add_delete(r"/api/products/{id}", guarded(retire_product))
    app.router.add_post(r"/api/products/{id}/restore", guarded(restore_product))
    app.router.add_get(r"/api/products/{id}/qr.{fmt:svg|png}", guarded(product_qr))
    app.router.add_get("/api/stats", guarded(stats))
