"""Reading the rollups: the one place the API and ``linkloop stats`` parse and render figures."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from adapters import by_platform

from .inputs import parse_uint
from .spreadsheet import csv_text
from .store import METRICS, StatsRow, Store
from .store.sketch import EXACT_MAX, RELATIVE_ERROR_95

__all__ = ["ACCURACY", "CHANNEL_PATTERN", "GROUPINGS", "RATES", "RATE_OF", "StatsQuery",
           "StatsQueryError", "parse_stats_query", "rows_csv", "run_stats", "run_total",
           "stats_answer", "unrounded_rate", "with_funnel"]

GROUPINGS = ("platform", "product", "day", "channel")
#: A ``?ch=`` channel name, as the share link accepts it (shopper.CHANNEL_PATTERN).
CHANNEL_PATTERN = re.compile(r"[a-z0-9_]{1,32}")
RATES = ("open_rate", "entry_rate", "add_rate", "chat_rate")
#: Each rate as (part, whole): the counts it is the share of.
RATE_OF = {"open_rate": ("storefront_opens", "clicks"), "entry_rate": ("entries", "clicks"),
           "add_rate": ("adds", "entries"), "chat_rate": ("chats", "adds")}
#: How far to trust ``unique_visitors`` (every answer says it; see store/sketch.py): exact
#: up to ``exact_up_to`` visitors, else within ``relative_error_95`` of the true count 95%
#: of the time; each row's ``unique_visitors_error`` is that bound in visitors (0: exact).
ACCURACY = {"method": "hyperloglog", "exact_up_to": EXACT_MAX,
            "relative_error_95": RELATIVE_ERROR_95}
DEFAULT_DAYS = 30
MAX_DAYS = 366


class StatsQueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StatsQuery:
    def __init__(self, from_day: date, to_day: date, by: str, product_id: int | None,
                 platform: str | None, channel: str | None = None) -> None:
        self.from_day = from_day
        self.to_day = to_day
        self.by = by
        self.product_id = product_id
        self.platform = platform
        self.channel = channel


# YYYY-MM-DD only: ``date.fromisoformat`` also takes 20260131 and week dates (2026-W05-6).
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(value: str, field: str) -> date:
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise StatsQueryError(field, f"{field} must be a date like 2026-01-31") from None


def parse_stats_query(params: dict[str, str | None], today: date) -> StatsQuery:
    """Checked filters; the range defaults to the last 30 days ending today."""
    to_text, from_text = params.get("to"), params.get("from")
    to_day = _day(to_text, "to") if to_text else today
    if from_text:
        from_day = _day(from_text, "from")
    elif to_day - date.min < timedelta(days=DEFAULT_DAYS - 1):  # 0001-01-05 less 30 days
        raise StatsQueryError("to", "to is before any day with figures")
    else:
        from_day = to_day - timedelta(days=DEFAULT_DAYS - 1)
    if from_day > to_day:
        raise StatsQueryError("from", "from must not be after to")
    if (to_day - from_day).days >= MAX_DAYS:
        raise StatsQueryError("from", f"a range covers at most {MAX_DAYS} days")
    by = params.get("by") or "platform"
    if by not in GROUPINGS:
        raise StatsQueryError("by", f"by must be one of {', '.join(GROUPINGS)}")
    product_id = None
    if params.get("product"):
        # ASCII digits in the stores' range: int() would take " 1_0", and a store raises on
        # a 20-digit number.
        product_id = parse_uint(params["product"])
        if product_id is None:
            raise StatsQueryError("product", "product must be a product id")
    platform = params.get("platform") or None
    if platform is not None and by_platform(platform) is None:
        raise StatsQueryError("platform", f"unknown platform {platform!r}")
    channel = params.get("channel") or None
    if channel is not None and not CHANNEL_PATTERN.fullmatch(channel):
        raise StatsQueryError("channel", "channel must be 1-32 of a-z, 0-9 and _")
    return StatsQuery(from_day, to_day, by, product_id, platform, channel)


async def run_stats(store: Store, merchant_id: str, query: StatsQuery) -> list[dict[str, Any]]:
    """The rows for a query, as JSON-ready dicts with the funnel's rates."""
    return [with_funnel(r.as_json()) for r in await _rows(store, merchant_id, query, query.by)]


async def run_total(store: Store, merchant_id: str, query: StatsQuery) -> dict[str, Any]:
    """Everything the query's filters keep, as one row: its unique visitors are distinct
    over all the rows (never their sum: one visitor may be in several)."""
    (total,) = await _rows(store, merchant_id, query, "total")
    return with_funnel(total.as_json())


async def _rows(store: Store, merchant_id: str, query: StatsQuery, by: str) -> list[StatsRow]:
    return await store.stats(
        merchant_id, from_day=query.from_day.isoformat(), to_day=query.to_day.isoformat(),
        by=by,  # type: ignore[arg-type]
        product_id=query.product_id, platform=query.platform, channel=query.channel)


async def stats_answer(store: Store, merchant_id: str, query: StatsQuery,
                       timezone: str) -> dict[str, Any]:
    """The JSON answer of ``GET /api/stats`` and ``linkloop stats``: the rows, their total,
    the time zone their days are in, and how exact the unique visitors are."""
    return {"from": query.from_day.isoformat(), "to": query.to_day.isoformat(),
            "by": query.by, "timezone": timezone, "unique_visitors_accuracy": ACCURACY,
            "rows": await run_stats(store, merchant_id, query),
            "total": await run_total(store, merchant_id, query)}


def unrounded_rate(row: dict[str, Any], rate: str) -> float | None:
    """A row's rate (``RATE_OF``) unrounded, None where the step before is zero: what a
    percentage for people is rounded from, once (the dashboard, ``linkloop stats``'s table).
    Rounding the 4-place rate again would show 15 opens of 19 clicks (78.947%, 0.7895) as
    79.0%."""
    part, whole = RATE_OF[rate]
    return int(row[part]) / int(row[whole]) if row[whole] else None


def with_funnel(row: dict[str, Any]) -> dict[str, Any]:
    """A stats row with the funnel's conversion rates: clicks -> opens -> entries -> adds
    -> chats.

    ``open_rate`` and ``entry_rate`` are shares of clicks; ``add_rate`` is adds per entry,
    ``chat_rate`` chats per add. None where the step before is zero.
    """
    for rate in RATE_OF:
        value = unrounded_rate(row, rate)
        row[rate] = None if value is None else round(value, 4)
    return row


def rows_csv(by: str, rows: list[dict[str, Any]], timezone: str) -> str:
    """The rows as CSV, for the API, the dashboard and the CLI alike (gateway/spreadsheet.py
    keeps a title like ``=HYPERLINK(...)`` from becoming a formula).

    One header line, and the time zone the days are in as the last column of every row: a
    spreadsheet opens it as a plain table (a comment line above the header would land in
    cell A1 and push the header down, breaking sorting, filters and pivot tables), and the
    zone stays beside the figures wherever rows are copied.
    """
    keys = ["product_id", "code", "title"] if by == "product" else [by]
    return csv_text([*keys, *METRICS, "unique_visitors_error", *RATES, "timezone"],
                    ([row[k] for k in keys] + [row[m] for m in METRICS]
                     + [row["unique_visitors_error"]] + [row[r] for r in RATES] + [timezone]
                     for row in rows))
