"""Moving a merchant between stores (SQLite <-> PostgreSQL): ``linkloop export`` / ``import``.

The file is JSON lines: a header, then the merchant, its products (with their sales
windows), named channels, entry point, WeCom ways, app credentials, staff logins (password
hashes, never passwords), and every raw click and event. Rollups (per day, per month,
daily totals) and daily unique visitors are not in it: they are derived, and the import
rebuilds them all by recording the raw rows exactly as the gateway did (``Store.record``),
so both sides agree by construction. The one exception is the days before the retention
(gateway/retention.py), whose raw rows are pruned: they travel as their per-day rollup
rows and their visitor sketches. The merchant's WeCom and WeChat secrets stay sealed under
the source's key (gateway/secretbox.py) unless the export is asked to decrypt them; an
import into another deployment then needs that key.

Product ids are the target's own (ids are per database); share codes, which people hold,
are kept. An import refuses, before writing anything, a merchant that already exists or a
share code that is taken in the target.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from .secretbox import SecretBox, SecretsKeyError
from .store import (
    COUNTERS,
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
from .store.rollup import KEY_COLUMNS, RollupKey, SketchKey
from .store.sealing import (
    open_credential_secret,
    open_entry_secrets,
    seal_credential_secret,
    seal_entry_secrets,
)

__all__ = ["FORMAT", "TransferError", "export_merchant", "import_merchant"]

FORMAT = "linkloop-export"
#: Version 2: clicks carry their ``outcome`` and events may be chats and lost contacts.
#: Version 3: the secrets are sealed unless the header says ``"secrets": "plain"``, and the
#: days before the retention travel as rollup and visitor-sketch lines. Versions 1 and 2
#: (plain secrets) still import; in version 1 a click's outcome is unknown ('').
VERSION = 3
_READABLE = (1, 2, 3)
_PAGE = 1000


class TransferError(Exception):
    """The export can't be read, or the target can't take it; nothing was written."""


def _line(kind: str, data: Any) -> str:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    elif isinstance(data, (Click, Event)):
        data = data._asdict()
    return json.dumps({"kind": kind, "data": data}, ensure_ascii=False) + "\n"


async def export_merchant(store: Store, merchant_id: str, *, decrypt_secrets: bool = False,
                          rollups_before: str | None = None) -> AsyncIterator[str]:
    """The merchant as JSON lines (a generator, so clicks stream page by page). Its WeCom
    and WeChat secrets stay sealed under the source's key unless ``decrypt_secrets``.

    ``rollups_before``: the first day whose raw rows are kept (gateway/retention.py). The
    days before it travel as their rollup rows, since their raw rows are pruned (or soon
    will be); their raw rows, if still there, are left out so nothing counts twice.
    """
    merchant = await store.get_merchant(merchant_id)
    if merchant is None:
        raise TransferError(f"no merchant {merchant_id!r}")
    box = None if decrypt_secrets else store.secrets
    header = {"format": FORMAT, "version": VERSION, "merchant": merchant_id,
              "secrets": "plain" if box is None else "sealed"}
    if box is not None:
        header["secrets_key"] = box.current_id
    if rollups_before is not None:
        header["rollups_before"] = rollups_before
    yield json.dumps(header) + "\n"
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
        data = dataclasses.asdict(entry)
        if box is not None:
            data["secrets"] = seal_entry_secrets(box, merchant_id, entry.secrets)
        yield _line("entry", data)
    for way in await store.list_entry_ways(merchant_id):
        yield _line("entry_way", way)
    for credentials in await store.list_credentials(merchant_id):
        if box is not None:
            credentials = dataclasses.replace(credentials, secret=seal_credential_secret(
                box, merchant_id, credentials.platform, credentials.secret))
        yield _line("credentials", credentials)
    for user in await store.list_users(merchant_id):
        yield _line("user", user)
    if rollups_before is not None:
        counted, sketches = await store.export_rollups(merchant_id, before_day=rollups_before)
        for key, counts in counted:
            yield _line("rollup", {**dict(zip(KEY_COLUMNS["rollups"], key, strict=True)),
                                   **dict(zip(COUNTERS, counts, strict=True))})
        for cell, sketch in sketches:
            yield _line("sketch", {**dict(zip(_SKETCH_FIELDS, cell, strict=True)),
                                   "sketch": base64.b64encode(sketch).decode()})
    for kind, page_of in (("click", store.export_clicks), ("event", store.export_events)):
        cursor = ""
        while True:
            rows = await page_of(merchant_id, after=cursor, limit=_PAGE)
            for row in rows:
                if rollups_before is None or row.day >= rollups_before:
                    yield _line(kind, row)
            if len(rows) < _PAGE:
                break
            cursor = rows[-1].id


def _read(lines: Iterable[str]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
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
    return header, parts


_SKETCH_FIELDS = ("merchant_id", "kind", "period", "product_id", "platform", "channel")


def _sketches(lines: list[dict[str, Any]], merchant_id: str, new_ids: dict[int, int],
              ) -> list[tuple[SketchKey, bytes]]:
    """The export's visitor-sketch lines as (cell, sketch), in the target's product ids."""
    return [((merchant_id, str(line["kind"]), str(line["period"]),
              new_ids.get(int(line["product_id"]), int(line["product_id"])),
              str(line["platform"]), str(line["channel"])),
             base64.b64decode(line["sketch"], validate=True)) for line in lines]


def _rollups(lines: list[dict[str, Any]]) -> list[tuple[RollupKey, tuple[int, ...]]]:
    """The export's rollup lines as (key, counts); the merchant is set on import."""
    return [((str(line["merchant_id"]), int(line["product_id"]), str(line["day"]),
              str(line["platform"]), str(line["channel"])),
             tuple(int(line.get(counter, 0)) for counter in COUNTERS)) for line in lines]


def _opened_secrets(box: SecretBox, parts: dict[str, list[dict[str, Any]]]) -> None:
    """Open the export's sealed secrets in place, before anything is written."""
    try:
        for entry in parts.get("entry", []):
            entry["secrets"] = open_entry_secrets(box, entry["merchant_id"], entry["secrets"])
        for credentials in parts.get("credentials", []):
            credentials["secret"] = open_credential_secret(
                box, credentials["merchant_id"], credentials["platform"], credentials["secret"])
    except SecretsKeyError as exc:
        raise TransferError(f"{exc}. Give the exporting deployment's key file with "
                            "--secrets-key-file, or export with --decrypt-secrets") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise TransferError(f"the export's secrets don't fit this version: {exc}") from None


async def import_merchant(store: Store, lines: Iterable[str], *,
                          keys: Sequence[bytes] = ()) -> dict[str, int]:
    """Write an export into ``store``; returns how many of each kind went in. Sealed
    secrets open with the target's own keys or ``keys`` (the source's), and are stored
    sealed under the target's."""
    header, parts = _read(lines)
    _opened_secrets(store.secrets.with_keys(keys), parts)
    try:
        merchant = Merchant(**{**parts["merchant"][0],
                               "domains": tuple(parts["merchant"][0]["domains"])})
        products = parts.get("product", [])
        clicks = [Click(**c) for c in parts.get("click", [])]
        events = [Event(**e) for e in parts.get("event", [])]
        rollups = _rollups(parts.get("rollup", []))
    except (TypeError, KeyError) as exc:
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
    # Days whose raw rows were pruned at the source: their counts, as they were.
    try:
        sketches = _sketches(parts.get("sketch", []), merchant.id, new_ids)
    except (KeyError, TypeError, ValueError) as exc:
        raise TransferError(f"the export's visitor sketches don't fit: {exc}") from None
    if rollups or sketches:
        await store.add_rollups([
            ((merchant.id, new_ids.get(product, product), day, platform, channel), counts)
            for (_m, product, day, platform, channel), counts in rollups], sketches)
    before = header.get("rollups_before")
    if isinstance(before, str):  # counted in those rollups: never twice
        clicks = [c for c in clicks if c.day >= before]
        events = [e for e in events if e.day >= before]
    # Raw rows through the same path the gateway writes them: rollups are rebuilt.
    clicks = [c._replace(product_id=new_ids.get(c.product_id, c.product_id)) for c in clicks]
    events = [e._replace(product_id=new_ids.get(e.product_id, e.product_id)
                         if e.product_id else e.product_id) for e in events]
    for start in range(0, max(len(clicks), len(events)), _PAGE):
        await store.record(clicks[start:start + _PAGE], events[start:start + _PAGE])
    return {"products": len(products), "channels": len(parts.get("channel", [])),
            "clicks": len(clicks), "events": len(events),
            "rollup_rows": len(rollups), "visitor_sketches": len(sketches),
            "entry": len(parts.get("entry", [])), "entry_ways": len(parts.get("entry_way", [])),
            "credentials": len(parts.get("credentials", [])), "users": len(users)}
