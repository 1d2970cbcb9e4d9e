"""Products as merchants write them: validation of the API body, and the JSON they read back.

The API, the console's forms, the bulk import, the CLI and the demo seeder all go through
``validate_product`` (or ``product_errors``, which finds every bad field at once for a form
or an import row) so that nothing reaches storage that an adapter has not checked, and the
same bad input gets the same error code wherever it was typed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters import TargetError, by_platform, platform_ids
from adapters.urls import ANY_PUBLIC_HOST, check_url

from .errors import ApiError
from .ids import CODE_PATTERN
from .inputs import plain_text
from .store import Merchant, Product

__all__ = ["WINDOW_FIELDS", "moment_text", "product_errors", "product_json", "share_url",
           "validate_product", "window_error"]

_SLUG = CODE_PATTERN  # a slug is a share code: the share link checks codes by it too
#: The optional sales window: ISO 8601 moments, kept as Unix seconds.
WINDOW_FIELDS = ("valid_from", "valid_until")
_FIELDS = {"title", "image_url", "price", "slug", "targets", *WINDOW_FIELDS}
_MAX_TITLE = 200
_MAX_PRICE = Decimal("100000000")
# A date and a time to the minute (seconds and fraction optional), ``T`` or a space between
# them, and an optional UTC offset: what <input type="datetime-local"> sends, what a
# spreadsheet cell reads as, and what the API answers. Nothing else datetime.fromisoformat
# would also take (week dates, ordinal dates, a bare date whose "when" is a guess).
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
                     r"(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?")
# A window a person means: not before 2000, not after 2100.
_EARLIEST, _LATEST = 946684800.0, 4102444800.0


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
    if not amount.is_finite() or amount < 0 or amount > _MAX_PRICE:
        raise _invalid("price", f"price must be between 0 and {_MAX_PRICE}")
    if amount != amount.quantize(Decimal("0.01")):
        raise _invalid("price", "price has at most two decimal places")
    return str(amount.quantize(Decimal("0.01")))


def _targets(value: Any, merchant: Merchant) -> tuple[dict[str, dict[str, str]], list[ApiError]]:
    """Each platform's target checked by its adapter: what passed, and one error per
    platform that did not."""
    if not isinstance(value, Mapping) or not value:
        return {}, [_invalid("targets", "targets must map at least one platform to its fields",
                             "missing_field")]
    targets = {}
    errors = []
    for platform, raw in value.items():
        adapter = by_platform(platform)
        if adapter is None:
            errors.append(_invalid(
                f"targets.{platform}",
                f"unknown platform {platform!r}; known: {', '.join(platform_ids())}",
                "unknown_platform"))
            continue
        try:
            targets[platform] = adapter.validate_target(raw, web_domains=merchant.domains)
        except TargetError as exc:
            errors.append(_invalid(f"targets.{exc.field or platform}", exc.message, exc.code))
    return targets, errors


def _moment(value: Any, field: str, zone: tzinfo) -> float | None:
    """An ISO 8601 moment as Unix seconds; without an offset, it is a time in ``zone``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _MOMENT.fullmatch(value.strip()):
        raise _invalid(field, f"{field} must be a date and time like 2026-06-18T20:00"
                              "(+08:00 optional; without it, in stats.timezone)")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(field, f"{field} is not a real date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    seconds = moment.timestamp()
    if not _EARLIEST <= seconds <= _LATEST:
        raise _invalid(field, f"{field} must be between the years 2000 and 2100")
    return seconds


def window_error(valid_from: float | None, valid_until: float | None) -> ApiError | None:
    """The error of a window that ends before it starts, if it does."""
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        return _invalid("valid_until", "valid_until must be later than valid_from")
    return None


def product_errors(body: Any, merchant: Merchant, *, partial: bool, zone: tzinfo = UTC,
                   ) -> tuple[dict[str, Any], list[ApiError]]:
    """The checked fields of a create (``partial=False``) or change (``partial=True``) body,
    and every error found, in the order ``validate_product`` reports the first one.

    A form shows each error next to its field; an import row names them all. A body that is
    not an object, or names a field there is none of, is one error and nothing else.
    """
    if not isinstance(body, Mapping):
        return {}, [ApiError(400, "invalid_body", "the body must be a JSON object")]
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return {}, [_invalid(unknown[0], f"unknown field {unknown[0]!r}", "unknown_field")]
    if partial and "slug" in body:
        return {}, [_invalid("slug", "a share link's slug cannot change: printed links "
                                     "would break", "immutable_field")]
    fields: dict[str, Any] = {}
    errors: list[ApiError] = []
    checks: list[tuple[str, Any]] = []
    if not partial or "title" in body:
        checks.append(("title", lambda: _title(body.get("title"))))
    if "image_url" in body:
        checks.append(("image_url", lambda: _image_url(body["image_url"])))
    if "price" in body:
        checks.append(("price", lambda: _price(body["price"])))
    for name, check in checks:
        try:
            fields[name] = check()
        except ApiError as exc:
            errors.append(exc)
    if not partial or "targets" in body:
        targets, target_errors = _targets(body.get("targets"), merchant)
        errors.extend(target_errors)
        if not target_errors:
            fields["targets"] = targets
    if body.get("slug") is not None:
        slug = body["slug"]
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            errors.append(_invalid("slug", "slug must be 3-64 letters, digits, - or _, "
                                           "starting with a letter or digit"))
        else:
            fields["slug"] = slug
    for name in WINDOW_FIELDS:
        if name in body:
            try:
                fields[name] = _moment(body[name], name, zone)
            except ApiError as exc:
                errors.append(exc)
    if not errors:
        wrong = window_error(fields.get("valid_from"), fields.get("valid_until"))
        if wrong is not None:
            errors.append(wrong)
    return fields, errors


def validate_product(body: Any, merchant: Merchant, *, partial: bool,
                     zone: tzinfo = UTC) -> dict[str, Any]:
    """The checked fields of a create (``partial=False``) or change (``partial=True``) body;
    the first error (``ApiError``) otherwise. ``zone``: the time zone of a window's moments
    given without an offset (the gateway's ``stats.timezone``)."""
    fields, errors = product_errors(body, merchant, partial=partial, zone=zone)
    if errors:
        raise errors[0]
    return fields


def moment_text(seconds: float | None, zone: tzinfo) -> str | None:
    """A stored moment as the API writes it: ISO 8601 in ``zone``, to the second."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, zone).isoformat(timespec="seconds")


def share_url(public_url: str, code: str, channel: str = "") -> str:
    """The share link people hold for a product's ``code``: the route gateway/shopper.py
    answers on, under the deployment's public URL; tagged ``?ch=`` with a ``channel`` (a
    name already checked against stats.CHANNEL_PATTERN, so it needs no quoting)."""
    link = f"{public_url}/p/{code}"
    return f"{link}?ch={channel}" if channel else link


def product_json(product: Product, public_url: str, *, zone: tzinfo = UTC,
                 now: float | None = None) -> dict[str, Any]:
    """What the API answers for a product. ``state`` is where it stands at ``now`` (live,
    scheduled, ended, retired); the window's moments are written in ``zone``."""
    return {
        "id": product.id,
        "code": product.code,
        "share_url": share_url(public_url, product.code),
        "qr_url": f"{public_url}/api/products/{product.id}/qr.svg",
        "title": product.title,
        "image_url": product.image_url,
        "price": product.price,
        "targets": product.targets,
        "status": product.status,
        "state": product.state(time.time() if now is None else now),
        "valid_from": moment_text(product.valid_from, zone),
        "valid_until": moment_text(product.valid_until, zone),
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }
