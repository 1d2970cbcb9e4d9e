"""The API the merchant console added: what each app shows, spreadsheets, channels, and a
check of the WeCom entry point. The console's pages call the same functions these routes
do (``gateway.preview``, ``gateway.bulk``, ``gateway.wecom.check``), so a script and a
person get the same answers.

| route | does |
|---|---|
| ``GET /api/products/{id}/preview[?os=ios|android]`` | per app: redirect, landing or guide |
| ``POST /api/products/import[?dry_run=true]`` | CSV or XLSX body; per-row answers |
| ``GET /api/products/import/template?format=csv|xlsx`` | every column, and what each means |
| ``GET /api/products/export?format=csv|xlsx[&q=&state=]`` | the list, as the import reads it |
| ``GET/POST /api/channels``, ``DELETE /api/channels/{name}`` | named ``?ch=`` channels |
| ``POST /api/entry/check`` | call WeCom with the entry's settings, say what came back |
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import tzinfo
from typing import Any

from aiohttp import web

from adapters import by_platform

from . import bulk
from .api import after_save, json_body, merchant_of, own_product, principal, product_filters
from .appkeys import CLOCK, ENTRIES, PUBLIC_URL, SETTINGS, STORE
from .catalog import share_url
from .errors import ApiError, guarded
from .inputs import body_idle, plain_text, read_body
from .jsonout import json_response
from .preview import OSES, preview
from .stats import CHANNEL_PATTERN
from .store import Channel, ChannelExists, Product, ProductState, Store
from .wechat.links import minted_links
from .wecom.check import check_entry

__all__ = ["all_products", "channel_from", "file_response", "read_upload", "setup_routes",
           "whole_preview"]

#: Most products one export writes.
_EXPORT_MAX = 10_000
_MAX_LABEL = 40


# --- what each app shows ------------------------------------------------------------------------
async def whole_preview(request: web.Request, product: Product, os: str) -> dict[str, Any]:
    """The preview's answer, with the product's minted links and entry point as they are."""
    if os not in OSES:
        raise ApiError(422, "invalid_field", f"os must be one of {', '.join(OSES)}", "os")
    minted = ((await minted_links(request.app[STORE], [product.code])).get(product.code)
              if "wechat_miniprogram" in product.targets else None)
    entry = await request.app[ENTRIES].get(product.merchant_id)
    return {"id": product.id, "code": product.code, "os": os,
            "share_url": share_url(request.app[PUBLIC_URL], product.code),
            "places": preview(product, os="ios" if os == "ios" else "android",
                              minted=minted, entry=entry is not None)}


async def product_preview(request: web.Request) -> web.Response:
    who = principal(request)
    product = await own_product(request, who)
    return json_response(await whole_preview(request, product,
                                                 request.query.get("os") or "ios"))


# --- spreadsheets -------------------------------------------------------------------------------
async def read_upload(chunks: AsyncIterator[bytes], limit: int, seconds: float) -> bytes:
    """A whole upload, refused (413) as soon as it passes ``limit`` bytes, and (408) when
    its next bytes take longer than ``seconds`` to come."""
    try:
        return await read_body(chunks, limit=limit, seconds=seconds)
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large",
                       f"the file is larger than {limit} bytes (server.import_max_bytes)",
                       "file") from None


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid_field", f"{name} must be true or false", name)
    return value in ("true", "1")


async def import_file(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    merchant = await merchant_of(request, who)
    dry_run = _flag(request.query, "dry_run")
    limit = request.app[SETTINGS]["server.import_max_bytes"]
    if (request.content_length or 0) > limit:
        raise ApiError(413, "body_too_large",
                       f"the file is larger than {limit} bytes (server.import_max_bytes)", "file")
    data = await read_upload(request.content.iter_chunked(64 * 1024), limit, body_idle(request))
    kind = bulk.kind_of(request.content_type, data)
    if kind is None:
        raise ApiError(415, "unsupported_media_type",
                       f"send the file as text/csv or {bulk.XLSX_TYPE}")
    table = await bulk.read_file(data, kind)
    result = await bulk.import_products(request.app[STORE], merchant, table, dry_run=dry_run,
                                        zone=request.app[CLOCK].zone)
    for product in result.created:
        await after_save(request.app, product, wait=False)
    if result.errors and not dry_run:
        # The API's one error shape: which rows, each row's first problem; every problem of
        # every row is the dry run's answer.
        wrong = [f"row {r['row']} {r['errors'][0]['field']} {r['errors'][0]['code']}"
                 for r in result.rows if r["status"] == "error"]
        more = f" and {len(wrong) - 10} more" if len(wrong) > 10 else ""
        raise ApiError(422, "import_rejected", (
            f"{result.errors} of {len(result.rows)} rows have errors ({'; '.join(wrong[:10])}"
            f"{more}); nothing was written: ?dry_run=true answers every row"), "file")
    return json_response(result.as_json(), status=201 if result.created else 200)


def file_response(data: bytes, kind: bulk.Kind, name: str) -> web.Response:
    """A spreadsheet download."""
    content_type = bulk.XLSX_TYPE if kind == "xlsx" else "text/csv"
    return web.Response(body=data, content_type=content_type,
                        charset="utf-8" if kind == "csv" else None, headers={
                            "Content-Disposition": f'attachment; filename="{name}.{kind}"',
                            "Cache-Control": "no-store"})


def _kind(query: Mapping[str, str]) -> bulk.Kind:
    kind = query.get("format") or "xlsx"
    if kind not in ("csv", "xlsx"):
        raise ApiError(422, "invalid_field", "format must be csv or xlsx", "format")
    return "csv" if kind == "csv" else "xlsx"


async def import_template(request: web.Request) -> web.Response:
    principal(request)
    kind = _kind(request.query)
    return file_response(await bulk.template_file(kind), kind, "linkloop-products-template")


async def all_products(store: Store, merchant_id: str, *, search: str | None = None,
                       state: ProductState | None = None) -> list[Product]:
    """Every one of the merchant's products (up to the export's cap), filtered as listed."""
    found: list[Product] = []
    now = time.time()
    while len(found) < _EXPORT_MAX:
        page = await store.list_products(merchant_id, limit=500,
                                         after_id=found[-1].id if found else 0,
                                         search=search, state=state, now=now)
        found.extend(page)
        if len(page) < 500:
            break
    return found[:_EXPORT_MAX]


async def export_products(request: web.Request) -> web.Response:
    who = principal(request)
    kind = _kind(request.query)
    search, state = product_filters(request.query)
    found = await all_products(request.app[STORE], who.merchant_id, search=search, state=state)
    zone: tzinfo = request.app[CLOCK].zone
    data = await bulk.export_file(found, kind, request.app[PUBLIC_URL], zone=zone,
                                  now=time.time())
    return file_response(data, kind, f"linkloop-products-{request.app[CLOCK].today()}")


# --- channels -----------------------------------------------------------------------------------
def channel_json(channel: Channel) -> dict[str, Any]:
    return {"name": channel.name, "label": channel.label, "created_at": channel.created_at}


def channel_from(body: Any, merchant_id: str) -> Channel:
    """A new channel from ``{name, label?}``; the name is what ``?ch=`` carries."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"name", "label"})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
    name = body.get("name")
    if not isinstance(name, str) or not CHANNEL_PATTERN.fullmatch(name):
        raise ApiError(422, "invalid_field", "name must be 1-32 of a-z, 0-9 and _", "name")
    if by_platform(name) is not None:
        # ?ch=<platform id> already means "this click came from that platform".
        raise ApiError(422, "reserved_name", f"{name!r} is a platform id: ?ch={name} already "
                                             "names that platform", "name")
    label = body.get("label")
    label = plain_text(label, "label", _MAX_LABEL) if label not in (None, "") else ""
    return Channel(merchant_id, name, label)


async def list_channels(request: web.Request) -> web.Response:
    who = principal(request)
    found = await request.app[STORE].list_channels(who.merchant_id)
    return json_response({"items": [channel_json(c) for c in found]})


async def create_channel(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    await merchant_of(request, who)
    channel = channel_from(await json_body(request), who.merchant_id)
    try:
        made = await request.app[STORE].create_channel(channel)
    except ChannelExists:
        raise ApiError(409, "channel_exists", f"there is a channel {channel.name!r} already",
                       "name") from None
    return json_response(channel_json(made), status=201)


async def delete_channel(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    name = request.match_info["name"]
    if not await request.app[STORE].delete_channel(who.merchant_id, name):
        raise ApiError(404, "not_found", "no such channel")
    return json_response({"deleted": name})


# --- the WeCom entry point ------------------------------------------------------------------------
async def check_entry_point(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    directory = request.app[ENTRIES]
    entry = await directory.store.get_entry(who.merchant_id)
    if entry is None:
        raise ApiError(404, "not_found", "no entry point is set: PUT /api/entry")
    steps = await check_entry(directory.client, entry)
    return json_response({"ok": all(s.ok for s in steps),
                              "steps": [s.as_json() for s in steps]})


def setup_routes(app: web.Application) -> None:
    """Call before ``api.setup_routes``: ``/api/products/export`` must come before
    ``/api/products/{id}``, which would take "export" for an id."""
    router = app.router
    router.add_get("/api/products/export", guarded(export_products))
    router.add_post("/api/products/import", guarded(import_file))
    router.add_get("/api/products/import/template", guarded(import_template))
    router.add_get(r"/api/products/{id}/preview", guarded(product_preview))
    router.add_get("/api/channels", guarded(list_channels))
    router.add_post("/api/channels", guarded(create_channel))
    router.add_delete("/api/channels/{name}", guarded(delete_channel))
    router.add_post("/api/entry/check", guarded(check_entry_point))
