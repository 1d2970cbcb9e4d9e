"""Products as merchants write them: validation of the API body, and the JSON they read back.

The API and the demo seeder both go through ``validate_product`` so that nothing reaches
storage that an adapter has not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters import TargetError, by_platform, platform_ids
from adapters.urls import ANY_PUBLIC_HOST, check_url

from .errors import ApiError
from .ids import CODE_PATTERN
from .inputs import plain_text
from .store import Merchant, Product

__all__ = ["product_json", "validate_product"]

_SLUG = CODE_PATTERN  # a slug is a share code: the share link checks codes by it too
_FIELDS = {"title", "image_url", "price", "slug", "targets"}
_MAX_TITLE = 200


def _invalid(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, message, field)


def _title(value: Any) -> str:
    # Shown on the landing page, in link previews and in every CSV: one plain line.
    return plain_text(value, "title", _MAX_TITLE)


def _image_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    # Any public host may serve the picture (a CDN, the platform's image server): it is
    # shown, never navigated to. The one URL check still holds it to https (no mixed content
    # on the landing page) on a plain public DNS name, read the same by every parser.
    try:
        return check_url(value, "image_url", ANY_PUBLIC_HOST)
    except TargetError as exc:
        raise _invalid("image_url", exc.message, exc.code) from None


def _price(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid("price", "price must be a number such as 99.90")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _invalid("price", "price must be a number such as 99.90") from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("100000000"):
        raise _invalid("price", "price must be between 0 and 100000000")
    if amount != amount.quantize(Decimal("0.01")):
        raise _invalid("price", "price has at most two decimal places")
    return str(amount.quantize(Decimal("0.01")))


def _targets(value: Any, merchant: Merchant) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping) or not value:
        raise _invalid("targets", "targets must map at least one platform to its fields",
                       "missing_field")
    targets = {}
    for platform, raw in value.items():
        adapter = by_platform(platform)
        if adapter is None:
            raise _invalid(f"targets.{platform}",
                           f"unknown platform {platform!r}; known: {', '.join(platform_ids())}",
                           "unknown_platform")
        try:
            targets[platform] = adapter.validate_target(raw, web_domains=merchant.domains)
        except TargetError as exc:
            raise _invalid(f"targets.{exc.field or platform}", exc.message, exc.code) from None
    return targets


def validate_product(body: Any, merchant: Merchant, *, partial: bool) -> dict[str, Any]:
    """The checked fields of a create (``partial=False``) or change (``partial=True``) body."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _invalid(unknown[0], f"unknown field {unknown[0]!r}", "unknown_field")
    if partial and "slug" in body:
        raise _invalid("slug", "a share link's slug cannot change: printed links would break",
                       "immutable_field")
    fields: dict[str, Any] = {}
    if not partial or "title" in body:
        fields["title"] = _title(body.get("title"))
    if "image_url" in body:
        fields["image_url"] = _image_url(body["image_url"])
    if "price" in body:
        fields["price"] = _price(body["price"])
    if not partial or "targets" in body:
        fields["targets"] = _targets(body.get("targets"), merchant)
    if body.get("slug") is not None:
        slug = body["slug"]
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            raise _invalid("slug", "slug must be 3-64 letters, digits, - or _, "
                                   "starting with a letter or digit")
        fields["slug"] = slug
    return fields


def product_json(product: Product, public_url: str) -> dict[str, Any]:
    return {
        "id": product.id,
        "code": product.code,
        "share_url": f"{public_url}/p/{product.code}",
        "qr_url": f"{public_url}/api/products/{product.id}/qr.svg",
        "title": product.title,
        "image_url": product.image_url,
        "price": product.price,
        "targets": product.targets,
        "status": product.status,
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }
