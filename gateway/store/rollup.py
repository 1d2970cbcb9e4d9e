"""Turning a batch of clicks and events into rollup increments (engine-neutral).

Five counter tables, all folded together from the same per-day increments, so they always
agree. Each key is (merchant, time, ...) with the channel:

- ``rollups``: per day, product and platform, the figures every other table sums;
- ``monthly_rollups``: per month, product and platform. A year by product and platform
  reads ~12 rows per product, platform and channel instead of ~365;
- ``daily_totals``: per day and platform, every product summed. A year by day, platform or
  channel reads ~365 rows per platform and channel instead of ~365 per product as well;
- ``product_days`` and ``product_months``: per day or month and product, every platform
  summed: a year by product reads ~12 rows a product and the days of two partial months,
  not a row per platform as well (19 times as many).

gateway/store/sql.py picks the table for each stats query.

How a batch reaches the five tables: its per-day increments are set aside in
``pending_counts`` (pending.py, which says why), and a fold adds them to every table with
SQL (``fold_statement``: ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE``, one per
table, keys in order, which also keeps two writers from deadlocking on a row). Each engine
makes a batch's increments where that is cheaper (bench/record.py, side by side):

- **SQLite sums in Python** (``rollup_deltas``): SQLite runs in the writer's own process,
  so SQL would do the same work at a higher cost;
- **PostgreSQL sums in the database** (``batch_counts``): the batch's clicks are sent once
  as plain column arrays, and one statement turns each into its counters and sums them
  per key. Python only sums the events (few, each needing its click's origin) into
  per-day delta rows that join the clicks.

Unique visitors are not counters: they are sketches (sketch.py) in ``visitor_sketches``,
one per cell of a few *kinds*, each keeping the channel and some of product and platform,
per day or per month (``SKETCH_KINDS``). A report merges the cells of the one kind that
keeps what it groups and filters by, as few as cover its range.

An event counts under the channel, platform and product of the click it follows. When that
click is not stored yet (a journal replayed out of order), the event counts under its own
platform, its own product (0 when it has none) and no channel, and is marked unattributed;
the batch that brings the click moves it (``reattributed_deltas``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .base import COUNTERS, Click, Event, RollupKey, SketchKey
from .sketch import visitor_hash

__all__ = ["BATCH_CLICK_COLUMNS", "KEY_COLUMNS", "SKETCH_KINDS", "ClickOrigin", "FinestKey",
           "RollupDelta", "RollupKey", "SketchKey", "batch_click_row", "batch_counts",
           "cells_of", "delta_rows", "finest_cells", "fold_statement", "reattributed_deltas",
           "rollup_deltas", "sketch_cells"]


#: (merchant_id, day, product_id, platform, channel ('' for none)): a click's finest sketch
#: cell, which every kind's cell of that click is a union of.
FinestKey = tuple[str, str, int, str, str]

#: Each rollup table's key columns, in the order of its delta keys above.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "rollups": ("merchant_id", "product_id", "day", "platform", "channel"),
    "monthly_rollups": ("merchant_id", "product_id", "month", "platform", "channel"),
    "daily_totals": ("merchant_id", "day", "platform", "channel"),
    "product_days": ("merchant_id", "product_id", "day", "channel"),
    "product_months": ("merchant_id", "product_id", "month", "channel"),
}


#: Sketch kinds: what each keeps (p: product, l: platform, c: channel) and per what time
#: (d: day 'YYYY-MM-DD', m: month 'YYYY-MM'). A dimension not kept is summed (product 0,
#: platform ''). Every kind keeps the channel. A report reads the kind that keeps what it
#: groups and filters by, months where whole ones fit its range: a year by product reads
#: ~12 month cells a product and the days of two partial months, not 365 days.
SKETCH_KINDS: dict[str, tuple[bool, bool, str]] = {
    # kind: (keeps product, keeps platform, grain)
    "plcd": (True, True, "day"),
    "plcm": (True, True, "month"),
    "pcd": (True, False, "day"),
    "pcm": (True, False, "month"),
    "lcd": (False, True, "day"),
    "lcm": (False, True, "month"),
    "cd": (False, False, "day"),
    "cm": (False, False, "month"),
}

_EVENT_COUNTER = {"storefront_open": "storefront_opens", "entry": "entries", "add": "adds",
                  "chat": "chats", "lost": "lost_contacts"}
#: The counter a human click's outcome adds to (besides ``clicks``); a redirect is also a
#: storefront open: storefront_opens = direct redirects + ``/o/`` hops.
_OUTCOME_COUNTERS = {"redirect": ("redirects", "storefront_opens"), "landing": ("landings",),
                     "guide": ("guides",)}
_INDEX = {name: i for i, name in enumerate(COUNTERS)}


class ClickOrigin(NamedTuple):
    """What an event takes from the click it follows."""

    product_id: int
    platform: str
    channel: str


class RollupDelta:
    """Increments of one rollup row, in ``COUNTERS`` order."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTERS)

    def bump(self, counter: str, by: int = 1) -> None:
        self.counts[_INDEX[counter]] += by

    def add(self, other: RollupDelta) -> None:
        for index, value in enumerate(other.counts):
            self.counts[index] += value


def _event_key(event: Event, origin: ClickOrigin | None) -> RollupKey:
    if origin is None:
        return (event.merchant_id, event.product_id or 0, event.day, event.platform, "")
    return (event.merchant_id, event.product_id or origin.product_id, event.day,
            origin.platform, origin.channel)


def rollup_deltas(
    clicks: Iterable[Click], events: Iterable[Event],
    origins: Mapping[tuple[str, str], ClickOrigin],
) -> dict[RollupKey, RollupDelta]:
    """Sum a batch into one increment per rollup row.

    A bot's visit counts only in ``bot_clicks``; a person's in ``clicks`` and in its
    outcome's counters. An event counts under its click's origin from ``origins``
    ((merchant_id, click_id) -> origin); without one, under its own platform and product
    (0: an add whose state could not be traced) and no channel.
    """
    deltas: dict[RollupKey, RollupDelta] = {}
    for click in clicks:
        delta = deltas.get(key := (click.merchant_id, click.product_id, click.day,
                                   click.platform, click.channel or ""))
        if delta is None:
            delta = deltas[key] = RollupDelta()
        if click.bot:
            delta.bump("bot_clicks")
            continue
        delta.bump("clicks")
        for counter in _OUTCOME_COUNTERS.get(click.outcome, ()):
            delta.bump(counter)
    for event in events:
        origin = origins.get((event.merchant_id, event.click_id)) if event.click_id else None
        deltas.setdefault(_event_key(event, origin), RollupDelta()).bump(
            _EVENT_COUNTER[event.kind])
    return deltas


def reattributed_deltas(
    moved: Iterable[tuple[Event, ClickOrigin]],
) -> dict[RollupKey, RollupDelta]:
    """Move events counted before their click was stored to that click's origin."""
    deltas: dict[RollupKey, RollupDelta] = {}
    for event, origin in moved:
        counter = _EVENT_COUNTER[event.kind]
        deltas.setdefault(_event_key(event, None), RollupDelta()).bump(counter, -1)
        deltas.setdefault(_event_key(event, origin), RollupDelta()).bump(counter)
    return deltas


#: What a batch's clicks are sent to PostgreSQL as, for ``batch_counts``.
BATCH_CLICK_COLUMNS = ("merchant_id", "product_id", "day", "platform", "channel", "bot",
                       "outcome")


def batch_click_row(click: Click) -> tuple[str, int, str, str, str, int, str]:
    """A click as ``BATCH_CLICK_COLUMNS`` (no channel: ''; bot: 0 or 1)."""
    return (click.merchant_id, click.product_id, click.day, click.platform,
            click.channel or "", int(click.bot), click.outcome)


def delta_rows(deltas: Mapping[RollupKey, RollupDelta]) -> list[tuple[Any, ...]]:
    """Per-day increments as rows of ``rollups``' key columns then ``COUNTERS``."""
    return [(*key, *delta.counts) for key, delta in sorted(deltas.items())]


def _click_counter(counter: str) -> str:
    """SQL for what one click (a row of BATCH_CLICK_COLUMNS) adds to ``counter``: the same
    rules as ``rollup_deltas``."""
    if counter == "bot_clicks":
        return "bot"
    if counter == "clicks":
        return "1 - bot"
    outcomes = [outcome for outcome, counters in _OUTCOME_COUNTERS.items()
                if counter in counters]
    if not outcomes:
        return "0"
    listed = ", ".join(f"'{outcome}'" for outcome in outcomes)
    return f"CASE WHEN bot = 0 AND outcome IN ({listed}) THEN 1 ELSE 0 END"


#: A table's key columns as SQL over a per-day row (only months differ).
_KEY_SQL = {"month": "substr(day, 1, 7)"}


def batch_counts(clicks: str, deltas: str) -> str:
    """A query of the batch as per-day counter rows (``rollups``' key columns then
    COUNTERS), one per click or delta row: PostgreSQL sums them into pending_counts.

    ``clicks``: a table or subquery of the batch's clicks, columns BATCH_CLICK_COLUMNS, each
    turned into its counters here by the rules of ``rollup_deltas``; ``deltas``: one of
    per-day increments (the events'; an import's rows), ``delta_rows``' columns.
    """
    per_day = ", ".join(KEY_COLUMNS["rollups"])
    click_counts = ", ".join(f"{_click_counter(c)} AS {c}" for c in COUNTERS)
    return (f"SELECT {per_day}, {click_counts} FROM {clicks} "
            f"UNION ALL SELECT {per_day}, {', '.join(COUNTERS)} FROM {deltas}")


def fold_statement(table: str, batch: str) -> str:
    """One statement adding ``batch`` (a relation of per-day increments: ``rollups``' key
    columns then COUNTERS, as pending_counts holds them) to counter table ``table``:
    summed per key and written in key order."""
    keys = KEY_COLUMNS[table]
    grouped = ", ".join(_KEY_SQL.get(key, key) for key in keys)
    return (f"INSERT INTO {table} ({', '.join(keys)}, {', '.join(COUNTERS)}) "
            f"SELECT {grouped}, {', '.join(f'sum({c})' for c in COUNTERS)} "
            f"FROM {batch} WHERE true GROUP BY {grouped} ORDER BY {grouped} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTERS))


def sketch_cells(clicks: Iterable[Click]) -> dict[SketchKey, set[int]]:
    """The visitor hashes a batch adds to each sketch cell: every human click's visitor,
    in each kind's cell of that click."""
    return cells_of(finest_cells(clicks))


def finest_cells(clicks: Iterable[Click]) -> dict[FinestKey, set[int]]:
    """Every human click's visitor hash, gathered by the click's finest cell."""
    finest: dict[FinestKey, set[int]] = {}
    hashes: dict[str, int] = {}
    for click in clicks:
        if click.bot:
            continue
        found = hashes.get(click.visitor)
        if found is None:
            found = hashes[click.visitor] = visitor_hash(click.visitor)
        key = (click.merchant_id, click.day, click.product_id, click.platform,
               click.channel or "")
        visitors = finest.get(key)
        if visitors is None:
            finest[key] = {found}
        else:
            visitors.add(found)
    return finest


def cells_of(finest: Mapping[FinestKey, set[int]]) -> dict[SketchKey, set[int]]:
    """Each kind's cells, as unions of the finest cells: the work per click is one hash and
    one set insert (``finest_cells``), the rest is per cell (a flash sale's thousands of
    clicks on one product make one cell of each kind)."""
    cells: dict[SketchKey, set[int]] = {}
    for (merchant_id, day, product_id, platform, channel), visitors in finest.items():
        for kind, (product, by_platform, grain) in SKETCH_KINDS.items():
            cell = (merchant_id, kind, day if grain == "day" else day[:7],
                    product_id if product else 0, platform if by_platform else "", channel)
            held = cells.get(cell)
            if held is None:
                cells[cell] = set(visitors)
            else:
                held |= visitors
    return cells
