"""Moving a merchant between stores (SQLite <-> PostgreSQL): ``linkloop export`` / ``import``.

The file is JSON lines: a header, then the merchant, its products (with their sales
windows), named channels, entry point, WeCom ways, app credentials, staff logins (password
hashes, never passwords), and every raw click and event. Rollups (per day, per month,
daily totals) and daily unique visitors are not in it: they are derived, and the import
rebuilds them all by recording the raw rows exactly as the gateway did (``Store.record``),
so both sides agree by construction. The file holds the
merchant's WeCom and WeChat secrets: keep it as carefully as the database.

Product ids are the target's own (ids are per database); share codes, which people hold,
are kept. An import refuses, before writing anything, a merchant that already exists or a
share code that is taken in the target.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .store import (
    Channel,
    Click,
    CodeTaken,
    Credentials,
    Entry,
    EntryWay,
    Event,
    Merchant,
    MerchantExists,
    Store,
    User,
)

__all__ = ["FORMAT", "TransferError", "export_merchant", "import_merchant"]

FORMAT = "linkloop-export"
#: Version 2: clicks carry their ``outcome`` and events may be chats and lost contacts.
#: Version 1 files still import: their clicks' outcome is unknown ('').
VERSION = 2
_READABLE = (1, 2)
_PAGE = 1000


class TransferError(Exception):
    """The export can't be read, or the target can't take it; nothing was written."""


def _line(kind: str, data: Any) -> str:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    elif isinstance(data, (Click, Event)):
        data = data._asdict()
    return json.dumps({"kind": kind, "data": data}, ensure_ascii=False) + "\n"


async def export_merchant(store: Store, merchant_id: str) -> AsyncIterator[str]:
    """The merchant as JSON lines (a generator, so clicks stream page by page)."""
    merchant = await store.get_merchant(merchant_id)
    if merchant is None:
        raise TransferError(f"no merchant {merchant_id!r}")
    yield json.dumps({"format": FORMAT, "version": VERSION, "merchant": merchant_id}) + "\n"
    yield _line("merchant", merchant)
    after = 0
    while True:
        products = await store.list_products(merchant_id, limit=_PAGE, after_id=after)
        for product in products:
            yield _line("product", product)
        if len(products) < _PAGE:
            break
        after = products[-1].id
    for channel in await store.list_channels(merchant_id):
        yield _line("channel", channel)
    entry = await store.get_entry(merchant_id)
    if entry is not None:
        yield _line("entry", entry)
    for way in await store.list_entry_ways(merchant_id):
        yield _line("entry_way", way)
    for credentials in await store.list_credentials(merchant_id):
        yield _line("credentials", credentials)
    for user in await store.list_users(merchant_id):
        yield _line("user", user)
    for kind, page_of in (("click", store.export_clicks), ("event", store.export_events)):
        cursor = ""
        while True:
            rows = await page_of(merchant_id, after=cursor, limit=_PAGE)
            for row in rows:
                yield _line(kind, row)
            if len(rows) < _PAGE:
                break
            cursor = rows[-1].id


def _read(lines: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    parts: dict[str, list[dict[str, Any]]] = {}
    iterator = iter(lines)
    try:
        header = json.loads(next(iterator))
    except (StopIteration, ValueError):
        raise TransferError("not a LinkLoop export: the file is empty or not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TransferError("not a LinkLoop export")
    if header.get("version") not in _READABLE:
        raise TransferError(f"export version {header.get('version')} is not supported")
    for number, line in enumerate(iterator, start=2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            parts.setdefault(item["kind"], []).append(item["data"])
        except (ValueError, KeyError, TypeError):
            raise TransferError(f"line {number} is not a LinkLoop export line") from None
    if len(parts.get("merchant", [])) != 1:
        raise TransferError("the export must hold exactly one merchant")
    return parts


async def import_merchant(store: Store, lines: Iterable[str]) -> dict[str, int]:
    """Write an export into ``store``; returns how many of each kind went in."""
    parts = _read(lines)
    try:
        merchant = Merchant(**{**parts["merchant"][0],
                               "domains": tuple(parts["merchant"][0]["domains"])})
        products = parts.get("product", [])
        clicks = [Click(**c) for c in parts.get("click", [])]
        events = [Event(**e) for e in parts.get("event", [])]
    except TypeError as exc:
        raise TransferError(f"the export's rows don't fit this version: {exc}") from None
    if await store.get_merchant(merchant.id) is not None:
        raise TransferError(f"merchant {merchant.id!r} already exists in the target")
    for product in products:
        if await store.link(product["code"]) is not None:
            raise TransferError(f"share code {product['code']!r} is taken in the target")
    try:
        users = [User(**u) for u in parts.get("user", [])]
    except TypeError as exc:
        raise TransferError(f"the export's users don't fit this version: {exc}") from None
    for user in users:
        if await store.get_user(user.email) is not None:
            raise TransferError(f"a login for {user.email!r} exists in the target")

    try:
        await store.create_merchant(merchant)
    except MerchantExists:
        raise TransferError(f"merchant {merchant.id!r} already exists in the target") from None
    new_ids: dict[int, int] = {}
    for product in products:
        try:
            made = await store.create_product(
                merchant.id, code=product["code"], title=product["title"],
                targets=product["targets"], image_url=product["image_url"],
                price=product["price"], valid_from=product.get("valid_from"),
                valid_until=product.get("valid_until"))
        except CodeTaken:
            raise TransferError(f"share code {product['code']!r} is taken in the target") from None
        if product["status"] != "active":
            await store.update_product(merchant.id, made.id, {"status": product["status"]})
        new_ids[product["id"]] = made.id
    for channel in parts.get("channel", []):
        await store.create_channel(Channel(**channel))
    for entry in parts.get("entry", []):
        await store.put_entry(Entry(**entry))
    for way in parts.get("entry_way", []):
        await store.put_entry_way(EntryWay(**way))
    for credentials in parts.get("credentials", []):
        await store.put_credentials(Credentials(**credentials))
    for user in users:
        # A fresh start for lockouts and sessions; the password hash travels as it is.
        await store.create_user(User(user.email, user.merchant_id, user.role,
                                     user.password_hash, user.created_at))
    # Raw rows through the same path the gateway writes them: rollups are rebuilt.
    clicks = [c._replace(product_id=new_ids.get(c.product_id, c.product_id)) for c in clicks]
    events = [e._replace(product_id=new_ids.get(e.product_id, e.product_id)
                         if e.product_id else e.product_id) for e in events]
    for start in range(0, max(len(clicks), len(events)), _PAGE):
        await store.record(clicks[start:start + _PAGE], events[start:start + _PAGE])
    return {"products": len(products), "channels": len(parts.get("channel", [])),
            "clicks": len(clicks), "events": len(events),
            "entry": len(parts.get("entry", [])), "entry_ways": len(parts.get("entry_way", [])),
            "credentials": len(parts.get("credentials", [])), "users": len(users)}
