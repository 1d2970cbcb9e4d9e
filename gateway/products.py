"""Making and changing products: the one path the API, the console, the bulk import and
``linkloop product`` all take, so a product is checked and stored the same way whoever
made it, and every bad input is the same ``ApiError`` (code and field) wherever it came in.

Callers drop the share link from their own process's link cache (``LinkCache.forget``);
other processes hear of the change through storage (SQLite's change log, PostgreSQL's
NOTIFY), as for any change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any

from .catalog import validate_product, window_error
from .errors import ApiError
from .ids import new_code
from .store import CodeTaken, Merchant, Product, Store

__all__ = ["create_product", "product_by_id", "restore_product", "retire_product",
           "update_product"]

# Random codes are 8 of 62 characters: five collisions in a row mean something is wrong.
_CODE_ATTEMPTS = 5


async def create_product(store: Store, merchant: Merchant, body: Any, *,
                         zone: tzinfo = UTC) -> Product:
    """Check a create body and store it under its slug, or a new random code."""
    fields = validate_product(body, merchant, partial=False, zone=zone)
    slug = fields.pop("slug", None)
    for _attempt in range(_CODE_ATTEMPTS):
        try:
            return await store.create_product(
                merchant.id, code=slug or new_code(), title=fields["title"],
                targets=fields["targets"], image_url=fields.get("image_url"),
                price=fields.get("price"), valid_from=fields.get("valid_from"),
                valid_until=fields.get("valid_until"))
        except CodeTaken:
            if slug:
                raise ApiError(409, "slug_taken", f"the slug {slug!r} is taken", "slug") from None
    raise ApiError(503, "unavailable", "could not allocate a share code, try again")


async def product_by_id(store: Store, merchant_id: str, product_id: int | None) -> Product:
    """One of the merchant's products; another merchant's is simply not there (404)."""
    product = (await store.get_product(merchant_id, product_id)
               if product_id is not None else None)
    if product is None:
        raise ApiError(404, "not_found", "no such product")
    return product


async def update_product(store: Store, merchant: Merchant, product: Product, body: Any, *,
                         zone: tzinfo = UTC) -> Product:
    """Apply a change body (only the fields it names) to a product that is not retired."""
    if product.retired:
        raise ApiError(409, "product_retired", "a retired product cannot change; restore it "
                                               "first")
    changes = validate_product(body, merchant, partial=True, zone=zone)
    # A window is judged whole: the end given now against the start stored before.
    wrong = window_error(changes.get("valid_from", product.valid_from),
                         changes.get("valid_until", product.valid_until))
    if wrong is not None:
        raise wrong
    return await _changed(store, product, changes)


async def retire_product(store: Store, product: Product) -> Product:
    """The share link answers "gone" from now on (410); ``restore_product`` undoes it."""
    return await _changed(store, product, {"status": "retired"})


async def restore_product(store: Store, product: Product) -> Product:
    """A retired product comes back with the same code: every printed QR code works again."""
    return await _changed(store, product, {"status": "active"})


async def _changed(store: Store, product: Product, changes: Mapping[str, Any]) -> Product:
    updated = await store.update_product(product.merchant_id, product.id, changes)
    if updated is None:  # deleted between the read and the write: there is none now
        raise ApiError(404, "not_found", "no such product")
    return updated
