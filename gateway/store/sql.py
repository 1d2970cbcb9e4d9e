"""SQL both engines share, parametrised by each driver's placeholder style.

A stats query reads whichever rollup table (see rollup.py) answers it from the fewest rows:

- a product filter: ``rollups``, through rollups_by_product: that one product's rows;
- by product: ``product_months`` for the whole months of the range, ``product_days`` for
  the days before and after them (every platform summed); with a platform filter,
  ``monthly_rollups`` and ``rollups`` instead;
- anything else (by platform, day or channel): ``daily_totals``.

Each gives exactly the sums the per-day ``rollups`` would: the coarser tables hold those
very sums, folded in the same transaction. Every table lags by the increments set aside
and not folded yet (``pending_counts``, pending.py), which each query adds in.

Unique visitors come from ``visitor_sketches`` (``sketch_query``): the cells of the one kind
that keeps what the report groups and filters by, whole months where that kind has them
and days for the rest, merged per group by sketch.merge_counts.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from .base import COUNTERS, Click, GroupBy, ProductState, StatsRow
from .rollup import SKETCH_KINDS

__all__ = [
    "CLICK_COLUMNS",
    "PRODUCT_COLUMNS",
    "Grain",
    "Params",
    "SketchPlan",
    "click_row",
    "load_report_code",
    "login_attempt_query",
    "login_attempt_wait",
    "month_split",
    "product_list_query",
    "sketch_query",
    "stats_query",
    "stats_row",
    "with_unique_visitors",
]

#: A product row as both engines read it (``_product`` in each turns it into a Product).
PRODUCT_COLUMNS = ("id, merchant_id, code, title, targets, image_url, price, status, "
                   "created_at, updated_at, valid_from, valid_until")

#: What a part of a range counts in: days ('YYYY-MM-DD' bounds) or months ('YYYY-MM').
Grain = Literal["day", "month"]

_ONE_DAY = timedelta(days=1)


def month_split(from_day: str, to_day: str) -> list[tuple[Grain, str, str]]:
    """[from_day, to_day] as inclusive parts: the whole months in it, and the days before
    and after them. A range holding no whole month (or whose ends are not plain ISO dates:
    compared as text, as ever) is one part of days.
    """
    try:
        first, last = date.fromisoformat(from_day), date.fromisoformat(to_day)
        after = last + _ONE_DAY
    except (ValueError, OverflowError):
        return [("day", from_day, to_day)]
    if (first.isoformat(), last.isoformat()) != (from_day, to_day):
        return [("day", from_day, to_day)]
    start = first if first.day == 1 else _next_month(first)  # the first whole month's 1st
    stop = after.replace(day=1)  # the day after the last whole month
    if start >= stop:
        return [("day", from_day, to_day)]
    parts: list[tuple[Grain, str, str]] = []
    if first < start:
        parts.append(("day", from_day, (start - _ONE_DAY).isoformat()))
    parts.append(("month", start.isoformat()[:7], (stop - _ONE_DAY).isoformat()[:7]))
    if stop <= last:
        parts.append(("day", stop.isoformat(), to_day))
    return parts


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


class Params:
    """Values in the order their placeholders appear; ``mark`` is a format string given
    ``n``, the 1-based parameter number. Each use is a parameter of its own, since SQLite's
    ``?`` are positional.
    """

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self.mark.format(n=len(self.values))


def _sums(param: Params, merchant_id: str, table: str, column: str, lo: str, hi: str,
          key: str, filters: dict[str, Any]) -> str:
    """One table's sums per ``key`` over [lo, hi] of ``column``, for one merchant."""
    where = (f"merchant_id = {param(merchant_id)} AND {column} >= {param(lo)} "
             f"AND {column} <= {param(hi)}")
    for name, value in filters.items():
        where += f" AND {name} = {param(value)}"
    sums = ", ".join(f"SUM({m}) AS {m}" for m in COUNTERS)
    if key == _NO_KEY:  # one row of everything (SUM over no rows is NULL: counted as 0)
        return f"SELECT {key} AS k, {sums} FROM {table} WHERE {where}"
    return f"SELECT {key}, {sums} FROM {table} WHERE {where} GROUP BY {key}"


#: The "key" of the one ``total`` row: a constant.
_NO_KEY = "''"


def _group_key(by: GroupBy) -> str:
    return {"product": "product_id", "total": _NO_KEY}.get(by, by)


def _parts(from_day: str, to_day: str, by: GroupBy, product_id: int | None,
           platform: str | None, product_index: str) -> list[tuple[str, str, str, str]]:
    """(table, column, lo, hi) to read, per the module's docstring."""
    if product_id is not None:
        return [(f"rollups{product_index}", "day", from_day, to_day)]
    if by == "product":
        months, days = (("monthly_rollups", "rollups") if platform is not None
                        else ("product_months", "product_days"))
        return [(months, "month", lo, hi) if grain == "month" else (days, "day", lo, hi)
                for grain, lo, hi in month_split(from_day, to_day)]
    return [("daily_totals", "day", from_day, to_day)]


def stats_query(
    merchant_id: str, *, from_day: str, to_day: str, by: GroupBy,
    product_id: int | None, platform: str | None, mark: str, channel: str | None = None,
    force_product_index: bool = False,
) -> tuple[str, list[Any]]:
    """The one rollup query both engines run; ``mark`` yields each placeholder in turn.

    ``mark`` is a format string given ``n``, the 1-based parameter number: ``"?"`` for
    SQLite, ``"${n}"`` for PostgreSQL. ``force_product_index`` (SQLite): read a product's
    rows through rollups_by_product by name. Without statistics (the gateway never runs
    ANALYZE) SQLite's planner takes the primary key's day range instead: over a year of
    10M clicks, ~55 ms rather than ~7 ms.
    """
    param = Params(mark)
    product_index = " INDEXED BY rollups_by_product" if force_product_index else ""
    key = _group_key(by)
    given = {"product_id": product_id, "platform": platform, "channel": channel}
    filters = {name: value for name, value in given.items() if value is not None}
    selects = [_sums(param, merchant_id, table, column, lo, hi, key, filters)
               for table, column, lo, hi in _parts(from_day, to_day, by, product_id, platform,
                                                   product_index)]
    # The increments set aside and not folded into the tables yet (pending.py): every
    # counter table lags by exactly these rows, whatever table a part reads.
    selects.append(_sums(param, merchant_id, "pending_counts", "day", from_day, to_day, key,
                         filters))
    totals = ", ".join(f"SUM({m}) AS {m}" for m in COUNTERS)
    if by == "total":
        return f"SELECT {totals} FROM ({' UNION ALL '.join(selects)}) u", param.values
    # The parts (whole months and partial ones, the pending rows) added up per key.
    sums = f"SELECT {key}, {totals} FROM ({' UNION ALL '.join(selects)}) u GROUP BY {key}"
    columns = ", ".join(f"s.{m}" for m in COUNTERS)
    if by == "product":
        # Sum per product id first, then join the few resulting rows to their titles. Joined
        # on the merchant too, so a product id can never reach across tenants. A LEFT join:
        # adds whose product could not be traced roll up under product 0 and must count.
        query = (f"SELECT s.product_id, p.code, p.title, {columns} FROM ({sums}) s "
                 f"LEFT JOIN products p ON p.id = s.product_id "
                 f"AND p.merchant_id = {param(merchant_id)} ORDER BY s.product_id")
    else:
        query = f"SELECT s.{key}, {columns} FROM ({sums}) s ORDER BY s.{key}"
    return query, param.values


@dataclass(frozen=True)
class SketchPlan:
    """Which visitor sketch cells a report merges, and under which group.

    The kind keeps product and platform only when the report groups or filters by them
    (fewest, fullest cells); whole months come from its monthly cells where it has them,
    except by day. The group is the report's key (the day is the cell's period).
    """

    by: GroupBy
    keep_product: bool
    keep_platform: bool
    #: The kind's name without its grain (``SKETCH_KINDS``).
    base: str
    parts: tuple[tuple[Grain, str, str], ...]
    #: The report's filters as (column, value): the kind keeps each of those columns.
    filters: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, *, from_day: str, to_day: str, by: GroupBy, product_id: int | None,
           platform: str | None, channel: str | None) -> SketchPlan:
        keep_product = by == "product" or product_id is not None
        keep_platform = by == "platform" or platform is not None
        base = ("pl" if keep_product and keep_platform else "p" if keep_product
                else "l" if keep_platform else "") + "c"
        has_months = base + "m" in SKETCH_KINDS
        parts: list[tuple[Grain, str, str]] = (
            month_split(from_day, to_day) if has_months and by != "day"
            else [("day", from_day, to_day)])
        given = {"product_id": product_id, "platform": platform, "channel": channel}
        return cls(by, keep_product, keep_platform, base, tuple(parts),
                   tuple((name, value) for name, value in given.items() if value is not None))

    def filtered(self, param: Params) -> str:
        """The filters' SQL (`` AND column = <placeholder>`` each), ``param`` taking values."""
        return "".join(f" AND {name} = {param(value)}" for name, value in self.filters)


def sketch_query(plan: SketchPlan, merchant_id: str, *, mark: str) -> tuple[str, list[Any]]:
    """(group, the cell's key: merchant_id, kind, period, product_id, platform, channel,
    sketch) rows of every visitor sketch cell a report merges (``SketchPlan``)."""
    param = Params(mark)
    key = {"day": "period", "product": "product_id", "total": _NO_KEY}.get(plan.by, plan.by)
    selects = []
    for grain, lo, hi in plan.parts:
        where = (f"merchant_id = {param(merchant_id)} AND kind = {param(plan.base + grain[0])} "
                 f"AND period >= {param(lo)} AND period <= {param(hi)}{plan.filtered(param)}")
        selects.append(f"SELECT {key} AS k, merchant_id, kind, period, product_id, platform, "
                       f"channel, sketch FROM visitor_sketches WHERE {where}")
    return " UNION ALL ".join(selects), param.values


def load_report_code() -> None:
    """Import what merging sketches needs (numpy), before a report's storage deadline
    starts: only the first report of a process pays for it, and the click writer, which
    never reports, never does."""
    importlib.import_module(".distinct", __package__)


def with_unique_visitors(by: GroupBy, rows: list[StatsRow],
                         cells: Iterable[tuple[Any, bytes]]) -> list[StatsRow]:
    """``rows`` with their unique visitors: the sketch cells (``sketch_query``'s rows)
    merged per group. A group left with nothing at all (its only event moved to the click
    it followed, see rollup.py) is no row."""
    from .distinct import merge_counts  # numpy: reports only (the writer never loads it)

    counts = merge_counts(cells)
    name = {"product": "product_id", "total": None}.get(by, by)
    for row in rows:
        found = counts.get(row.key[name] if name else "")
        if found is not None:
            # A person is counted from a click of theirs: an estimate above the clicks
            # (911 visitors of 900 clicks) is wrong on its face, and the clicks are exact.
            row.unique_visitors = min(found.value, row.clicks)
            row.unique_visitors_error = found.error
    if by == "total":
        return rows
    return [row for row in rows if any(getattr(row, c) for c in COUNTERS)]


#: A clicks row's columns, in ``click_row``'s order (export, sketch backfill).
CLICK_COLUMNS = ("id, merchant_id, product_id, ts, day, platform, source, visitor, ip_hash, "
                 "bot, mobile, os, channel, outcome")


def click_row(r: Sequence[Any]) -> Click:
    return Click(id=r[0], merchant_id=r[1], product_id=r[2], ts=r[3], day=r[4], platform=r[5],
                 source=r[6], visitor=r[7], ip_hash=r[8], bot=bool(r[9]), mobile=bool(r[10]),
                 os=r[11], channel=r[12], outcome=r[13])


def stats_row(by: GroupBy, row: Sequence[Any]) -> StatsRow:
    if by == "total":
        return StatsRow.of({}, row)
    if by == "product":
        # Product 0 holds what could not be traced to a product: say so, don't show an id.
        key: dict[str, Any] = {"product_id": row[0] or None, "code": row[1], "title": row[2]}
        counts = row[3:]
    else:
        key = {by: row[0]}
        counts = row[1:]
    return StatsRow.of(key, counts)


def login_attempt_query(address: str, *, now: float, window_seconds: float,
                        max_attempts: int, mark: str) -> tuple[str, list[Any]]:
    """The one statement that counts a login attempt from ``address``: a row back when the
    attempt may go ahead, none when the address has used up its window.

    A row holds the address's window start and the attempts that went ahead in it; a closed
    window starts again at ``now``. One statement, so attempts made at once through several
    processes each count (every right-hand side reads the row as it was).
    """
    param = Params(mark)

    def closed() -> str:  # a parameter per use: SQLite's ``?`` are positional
        return f"t.window_start <= {param(now - window_seconds)}"

    query = (
        "INSERT INTO login_throttle AS t (address, window_start, attempts) "
        f"VALUES ({param(address)}, {param(now)}, 1) ON CONFLICT (address) DO UPDATE SET "
        f"window_start = CASE WHEN {closed()} THEN excluded.window_start "
        "ELSE t.window_start END, "
        f"attempts = CASE WHEN {closed()} THEN 1 ELSE t.attempts + 1 END "
        f"WHERE {closed()} OR t.attempts < {param(max_attempts)} RETURNING attempts")
    return query, param.values


def login_attempt_wait(window_start: float | None, *, now: float,
                       window_seconds: float) -> float:
    """Seconds until a refused address's window closes (its start read after the refusal)."""
    if window_start is None:  # closed and forgotten in between: refused all the same
        return window_seconds
    return max(float(window_start) + window_seconds - now, 0.001)


def _like_pattern(text: str) -> str:
    r"""``text`` as a LIKE pattern matching it anywhere, its own ``%``, ``_`` and ``\``
    taken literally (with ``ESCAPE '\'``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def product_list_query(merchant_id: str, *, limit: int, after_id: int, search: str | None,
                       state: ProductState | None, now: float, mark: str,
                       like: str = "LIKE") -> tuple[str, list[Any]]:
    """One page of a merchant's products, filtered as ``Store.list_products`` says.

    ``like``: the engine's case-insensitive LIKE (SQLite's LIKE is, for ASCII; PostgreSQL
    needs ILIKE). A state is the same test as ``Product.state``, in SQL.
    """
    param = Params(mark)
    where = [f"merchant_id = {param(merchant_id)}", f"id > {param(after_id)}"]
    if search:
        pattern = _like_pattern(search)
        where.append(f"(title {like} {param(pattern)} ESCAPE '\\' "
                     f"OR code {like} {param(pattern)} ESCAPE '\\')")
    if state == "retired":
        where.append("status = 'retired'")
    elif state == "scheduled":
        where.append(f"status = 'active' AND valid_from > {param(now)}")
    elif state == "ended":
        where.append(f"status = 'active' AND valid_until <= {param(now)} "
                     f"AND NOT (valid_from IS NOT NULL AND valid_from > {param(now)})")
    elif state == "live":
        where.append(f"status = 'active' AND (valid_from IS NULL OR valid_from <= {param(now)})"
                     f" AND (valid_until IS NULL OR valid_until > {param(now)})")
    query = (f"SELECT {PRODUCT_COLUMNS} FROM products WHERE {' AND '.join(where)} "
             f"ORDER BY id LIMIT {param(limit)}")
    return query, param.values
