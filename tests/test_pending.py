"""Visitors and counts set aside (gateway/store/pending.py), on each engine: reports count
them as the fold will, a fold changes no figure, and a forget, an export and a restart lose
none of them.

Every test has two merchants whose visitors would be confused (the same visitor ids at
both). The expected figures are the test's own: distinct visitor ids of the clicks it made,
and the counts of its clicks and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.store import Click, Event, Merchant, Store
from gateway.store.base import COUNTERS, GroupBy, StatsRow
from gateway.store.postgres import PostgresStore, _add_to_sketches
from gateway.store.sketch import EXACT_MAX, add_hashes
from gateway.store.sqlite import SQLiteStore

from . import pg
from .wait import until

MERCHANTS = ("m1", "m2")
#: Reports: (from, to) × every grouping × each filter, across a month's turn, and one
#: range holding a whole month (read from its month cells).
RANGES = (("2026-10-30", "2026-11-02"), ("2026-10-01", "2026-11-30"), ("2026-11-01", "2026-11-01"))
GROUPINGS: tuple[GroupBy, ...] = ("total", "day", "product", "platform", "channel")
FILTERS: tuple[tuple[tuple[str, object], ...], ...] = (
    (), (("product_id", 2),), (("platform", "jd"),), (("channel", "live"),), (("channel", ""),))
Report = tuple[str, str, str, GroupBy, tuple[tuple[str, object], ...]]

_ids = itertools.count()


def _clicks(merchant: str) -> list[Click]:
    """Small cells, one of 300 visitors (past EXACT_MAX: an estimate once folded) and one of
    237 regulars, over products, platforms, channels and days either side of a month's
    turn; some visitors come back, and bots count no visitor."""
    made = []
    days = ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02")
    for n in range(120):
        made.append(Click(f"{merchant}-{next(_ids):05d}", merchant, 1 + n % 3, 1.0,
                          days[n % 4], ("taobao", "jd")[n % 2], "ua", f"v{n % 45}", "h",
                          channel=("live", None, None)[n % 3], bot=n % 11 == 0))
    made += [Click(f"{merchant}-{next(_ids):05d}", merchant, 2, 1.0, "2026-11-01", "jd", "ua",
                   f"crowd{n}", "h") for n in range(EXACT_MAX + 44)]
    # Regulars: 300 clicks of 237 visitors in one cell, so the visitors folded and those
    # pending pass EXACT_MAX only when counted twice; together they stay exact.
    made += [Click(f"{merchant}-{next(_ids):05d}", merchant, 3, 1.0, "2026-10-31", "taobao",
                   "ua", f"regular{n % 237}", "h") for n in range(300)]
    return made


def _every_click() -> list[Click]:
    """Both merchants' clicks (``_clicks``)."""
    return [c for m in MERCHANTS for c in _clicks(m)]


def _expected(clicks: list[Click], report: Report) -> dict[object, int]:
    """Distinct human visitors per group, from the clicks themselves."""
    merchant, lo, hi, by, filters = report
    groups: dict[object, set[str]] = {}
    for c in clicks:
        channel = c.channel or ""
        if (c.merchant_id != merchant or c.bot or not lo <= c.day <= hi
                or any({"product_id": c.product_id, "platform": c.platform,
                        "channel": channel}[k] != v for k, v in filters)):
            continue
        key = {"day": c.day, "product": c.product_id, "platform": c.platform,
               "channel": channel}.get(by, "")
        groups.setdefault(key, set()).add(c.visitor)
    return {k: len(v) for k, v in groups.items()}


def _reports() -> Iterator[Report]:
    for merchant, (lo, hi), by, filters in itertools.product(MERCHANTS, RANGES, GROUPINGS,
                                                            FILTERS):
        yield merchant, lo, hi, by, filters


async def _figures(store: Store) -> dict[tuple[Report, object], tuple[int, int]]:
    """(unique visitors, error) of every group of every report."""
    found = {}
    for report in _reports():
        merchant, lo, hi, by, filters = report
        for row in await store.stats(merchant, from_day=lo, to_day=hi, by=by,
                                     **dict(filters)):  # type: ignore[arg-type]
            key = row.key.get({"product": "product_id"}.get(by, by), "")
            found[(report, key)] = (row.unique_visitors, row.unique_visitors_error)
    return found


_OUTCOME_COUNTERS = {"redirect": ("redirects", "storefront_opens"), "landing": ("landings",),
                     "guide": ("guides",)}
_EVENT_COUNTERS = {"storefront_open": "storefront_opens", "entry": "entries", "add": "adds",
                   "chat": "chats", "lost": "lost_contacts"}
Counts = tuple[int, ...]


def _traffic(merchant: str) -> tuple[list[Click], list[Event]]:
    """``_clicks`` with every outcome, and an event of each kind after some of them (a
    product only through its click)."""
    clicks = [c._replace(outcome=("redirect", "landing", "guide")[n % 3])
              for n, c in enumerate(_clicks(merchant))]
    kinds = list(_EVENT_COUNTERS)
    events = [Event(f"{merchant}-e{n:04d}", merchant, None, kinds[n % 5],  # type: ignore[arg-type]
                    "wecom", 2.0, c.day, click_id=c.id)
              for n, c in enumerate(c for c in clicks[::7] if not c.bot)]
    return clicks, events


def _both_merchants_traffic() -> tuple[list[Click], list[Event]]:
    traffic = [_traffic(m) for m in MERCHANTS]
    return [c for cs, _ in traffic for c in cs], [e for _, es in traffic for e in es]


def _expected_counts(clicks: list[Click], events: list[Event], report: Report,
                     ) -> dict[object, Counts]:
    """Every counter per group, from the clicks and events themselves: an event counts on
    its own day under its click's product, platform and channel."""
    merchant, lo, hi, by, filters = report
    groups: dict[object, dict[str, int]] = {}

    def count(c: Click, day: str, counters: tuple[str, ...]) -> None:
        channel = c.channel or ""
        if (c.merchant_id != merchant or not lo <= day <= hi
                or any({"product_id": c.product_id, "platform": c.platform,
                        "channel": channel}[k] != v for k, v in filters)):
            return
        key = {"day": day, "product": c.product_id, "platform": c.platform,
               "channel": channel}.get(by, "")
        row = groups.setdefault(key, dict.fromkeys(COUNTERS, 0))
        for counter in counters:
            row[counter] += 1

    for c in clicks:
        count(c, c.day, ("bot_clicks",) if c.bot else ("clicks", *_OUTCOME_COUNTERS[c.outcome]))
    by_id = {c.id: c for c in clicks}
    for e in events:
        assert e.click_id is not None
        count(by_id[e.click_id], e.day, (_EVENT_COUNTERS[e.kind],))
    return {key: tuple(row[c] for c in COUNTERS) for key, row in groups.items()}


async def _counts(store: Store) -> dict[tuple[Report, object], Counts]:
    """Every counter of every group of every report."""
    found = {}
    for report in _reports():
        merchant, lo, hi, by, filters = report
        for row in await store.stats(merchant, from_day=lo, to_day=hi, by=by,
                                     **dict(filters)):  # type: ignore[arg-type]
            key = row.key.get({"product": "product_id"}.get(by, by), "")
            found[(report, key)] = tuple(getattr(row, c) for c in COUNTERS)
    return found


async def _day_total(store: Store, merchant: str, **filters: Any) -> StatsRow:
    """The merchant's one total row for 2026-11-01, the day most tests click on."""
    (row,) = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                               by="total", **filters)
    return row


@dataclass
class Engine:
    """One engine's database for a test, kept across the stores opened on it."""

    #: A store on the database that folds once this many visitors are set aside, with
    #: both merchants made.
    open_store: Callable[[int], Awaitable[Store]]
    #: The merchant of each row still pending in a table (pending_visitors unless
    #: given), looked at behind the store.
    pending: Callable[..., Awaitable[list[str]]]
    #: Runs a statement on the database, behind the store (the ``engine`` fixture's).
    execute: Callable[[str], Awaitable[None]] | None = None

    async def open(self, fold_visitors: int) -> Store:
        store = await self.open_store(fold_visitors)
        for merchant in MERCHANTS:
            if await store.get_merchant(merchant) is None:
                await store.create_merchant(Merchant(merchant, merchant.upper()))
        return store


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """A file for SQLite; a fresh schema, dropped afterwards, for PostgreSQL."""
    query = "SELECT merchant_id FROM {}"
    if request.param == "sqlite":
        path = tmp_path / "linkloop.db"

        async def sqlite_pending(table: str = "pending_visitors") -> list[str]:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return [r[0] for r in conn.execute(query.format(table))]

        async def sqlite_execute(statement: str) -> None:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute(statement)
                conn.commit()

        yield Engine(lambda n: SQLiteStore.open(path, fold_visitors=n), sqlite_pending,
                     sqlite_execute)
        return
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as schema:

        async def postgres_pending(table: str = "pending_visitors") -> list[str]:
            conn = await pg.connect(url, schema)
            try:
                return [r[0] for r in await conn.fetch(query.format(table))]
            finally:
                await conn.close()

        async def postgres_execute(statement: str) -> None:
            conn = await pg.connect(url, schema)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        yield Engine(lambda n: PostgresStore.open(url, schema=schema, fold_visitors=n),
                     postgres_pending, postgres_execute)


async def test_a_fold_changes_no_figure(engine: Engine) -> None:
    clicks = _every_click()
    # Half the clicks folded into the sketches, the other half pending: the crowd's cells
    # hold 150 visitors each way, and pass EXACT_MAX only together.
    store = await engine.open(fold_visitors=1)
    try:
        await store.record(clicks[::2], [])
        assert await engine.pending() == []
    finally:
        await store.close()
    store = await engine.open(fold_visitors=10**9)  # never folds
    try:
        await store.record(clicks[1::2], [])
        assert sorted(set(await engine.pending())) == ["m1", "m2"]
        pending = await _figures(store)
    finally:
        await store.close()
    # Exact where every cell is small: the test's own count. The crowd's cell is an
    # estimate, counted from the registers the fold will write.
    for (report, key), (visitors, error) in pending.items():
        truth = _expected(clicks, report)[key]
        if error == 0:
            assert visitors == truth, (report, key)
        else:
            assert truth > EXACT_MAX and abs(visitors - truth) <= error, (report, key)
    assert any(error for _v, error in pending.values())
    for report in _reports():  # every group there, and no other
        assert {k for r, k in pending if r == report} == set(_expected(clicks, report))

    # A store that folds at once, given a batch that is all replayed clicks (no figure
    # changes): the pending visitors go into the sketches, and every figure stays as it
    # was (the crowd's: an estimate from the same registers, not the exact count of two
    # small cells).
    store = await engine.open(fold_visitors=1)
    try:
        await store.record(clicks[:3], [])
        assert await engine.pending() == []
        assert await _figures(store) == pending
    finally:
        await store.close()


async def test_a_fold_changes_no_count(engine: Engine) -> None:
    clicks, events = _both_merchants_traffic()
    # Half the clicks and events folded, the other half pending. Some folded events follow
    # a pending click: counted without it at first, then moved to it by the batch that
    # brings the click (a decrease and an increase, both pending).
    store = await engine.open(fold_visitors=1)
    try:
        await store.record(clicks[::2], events[::2])
        assert await engine.pending("pending_counts") == []
    finally:
        await store.close()
    store = await engine.open(fold_visitors=10**9)  # never folds
    try:
        await store.record(clicks[1::2], events[1::2])
        assert sorted(set(await engine.pending("pending_counts"))) == ["m1", "m2"]
        pending = await _counts(store)
    finally:
        await store.close()
    for report in _reports():
        found = {key: counts for (r, key), counts in pending.items() if r == report}
        expected = _expected_counts(clicks, events, report)
        if report[3] == "total":  # always one row, if only of zeros
            expected = expected or {"": (0,) * len(COUNTERS)}
        assert found == expected, report
    # A store that folds at once, given a batch of replayed clicks (no count changes): the
    # pending counts go into the tables, and every figure stays as it was.
    store = await engine.open(fold_visitors=1)
    try:
        await store.record(clicks[:3], [])
        assert await engine.pending("pending_counts") == []
        assert await _counts(store) == pending
    finally:
        await store.close()


async def test_counts_alone_fold_once_as_many_as_the_setting_have_gathered(
        engine: Engine) -> None:
    # Bots set no visitor aside: their counts alone bring the fold.
    store = await engine.open(fold_visitors=3)
    try:
        def bot(merchant: str, product: int) -> Click:
            return Click(f"{merchant}-{next(_ids):05d}", merchant, product, 1.0, "2026-11-01",
                         "taobao", "ua", "crawler", "h", bot=True)

        first = [bot("m1", 1), bot("m2", 1), bot("m1", 1)]
        await store.record(first, [])  # two rows
        assert sorted(await engine.pending("pending_counts")) == ["m1", "m2"]
        assert await engine.pending() == []
        # The same batch again (a replay) stores nothing, and sets nothing aside: it brings
        # no fold nearer.
        await store.record(first, [])
        assert sorted(await engine.pending("pending_counts")) == ["m1", "m2"]
        await store.record([bot("m1", 2)], [])  # the third
        assert await engine.pending("pending_counts") == []
        for merchant, bots in (("m1", 3), ("m2", 1)):
            row = await _day_total(store, merchant)
            assert (row.bot_clicks, row.clicks) == (bots, 0)
    finally:
        await store.close()


async def test_visitors_fold_once_as_many_as_the_setting_have_gathered(engine: Engine) -> None:
    store = await engine.open(fold_visitors=4)
    try:
        def click(merchant: str, visitor: str) -> Click:
            return Click(f"{merchant}-{next(_ids):05d}", merchant, 1, 1.0, "2026-11-01",
                         "taobao", "ua", visitor, "h")

        await store.record([click("m1", "a"), click("m2", "a"), click("m1", "b")], [])
        assert sorted(await engine.pending()) == ["m1", "m1", "m2"]
        await store.record([click("m2", "b")], [])  # the fourth
        assert await engine.pending() == []
        await store.record([click("m1", "c")], [])
        assert await engine.pending() == ["m1"]
        # The count starts again from none at the fold: three since then are not four.
        await store.record([click("m2", "c"), click("m1", "d")], [])
        assert sorted(await engine.pending()) == ["m1", "m1", "m2"]
        for merchant, visitors in (("m1", 4), ("m2", 3)):
            row = await _day_total(store, merchant)
            assert (row.unique_visitors, row.unique_visitors_error) == (visitors, 0)
    finally:
        await store.close()


async def test_pending_visitors_survive_a_restart_and_a_forget_takes_them_out(
        engine: Engine) -> None:
    clicks = _every_click()
    store = await engine.open(fold_visitors=10**9)
    try:
        await store.record(clicks, [])
        before = await _figures(store)
    finally:
        await store.close()
    store = await engine.open(fold_visitors=10**9)
    try:
        assert await _figures(store) == before
        # v0 came on 2026-10-30 (n = 0, 90: a bot at 0) and more; forgotten at m1 only.
        forgotten = await store.forget_visitor("v0", "m1")
        assert forgotten["m1"]["clicks"] == sum(
            1 for c in clicks if c.merchant_id == "m1" and c.visitor == "v0")
        after = await _figures(store)
    finally:
        await store.close()
    assert await engine.pending() == []  # folded first, then cleaned in the sketches
    assert await engine.pending("pending_counts") == []
    left = [c for c in clicks if not (c.merchant_id == "m1" and c.visitor == "v0")]
    for (report, key), (visitors, error) in after.items():
        if error == 0:
            assert visitors == _expected(left, report)[key], (report, key)
        if report[0] == "m2":
            assert (visitors, error) == before[(report, key)]


async def test_a_forget_of_a_crowd_visitor_rebuilds_their_cells_from_counts_set_aside(
        engine: Engine) -> None:
    # A cell of registers is rebuilt from its raw clicks only where they are all of its
    # clicks in the rollups (gateway/store/forget.py): with the counts still set aside,
    # the rollups would hold none of them, and every cell would be left as it was.
    clicks = _every_click()
    store = await engine.open(fold_visitors=10**9)
    try:
        await store.record(clicks, [])
        forgotten = await store.forget_visitor("crowd7", "m1")
        # The crowd's cell of each of the 8 kinds, all past EXACT_MAX.
        assert (forgotten["m1"]["sketches_rebuilt"], forgotten["m1"]["sketches_left"]) == (8, 0)
        row = await _day_total(store, "m1", product_id=2, platform="jd")
        crowd = {c.visitor for c in clicks if c.merchant_id == "m1" and not c.bot
                 and (c.day, c.product_id, c.platform) == ("2026-11-01", 2, "jd")}
        assert abs(row.unique_visitors - (len(crowd) - 1)) <= row.unique_visitors_error
        assert "m2" not in forgotten
    finally:
        await store.close()


async def test_an_export_carries_what_is_set_aside(engine: Engine) -> None:
    clicks, events = _both_merchants_traffic()
    store = await engine.open(fold_visitors=10**9)
    try:
        await store.record(clicks, events)
        for merchant in MERCHANTS:
            rows, sketches = await store.export_rollups(merchant, before_day="2026-11-01")
            assert all(key[0] == merchant for key, _counts in rows)
            by_day: dict[str, list[int]] = {}
            for (_m, _product, day, _platform, _channel), counts in rows:
                summed = by_day.setdefault(day, [0] * len(COUNTERS))
                for i, count in enumerate(counts):
                    summed[i] += count
            october: Report = (merchant, "2026-10-01", "2026-10-31", "day", ())
            assert {day: tuple(c) for day, c in by_day.items()} == _expected_counts(
                clicks, events, october) != {}
            assert all(cell[0] == merchant for cell, _s in sketches)
            # October's day cells of the kind by channel alone (every product and platform
            # summed): small, so exact sketches, 8 bytes a visitor after the kind's byte.
            days = {cell[2]: (len(sketch) - 1) // 8 for cell, sketch in sketches
                    if cell[1] == "cd" and cell[5] == ""}
            report: Report = (merchant, "2026-10-01", "2026-10-31", "day", (("channel", ""),))
            assert days == _expected(clicks, report) != {}
        assert await engine.pending() == await engine.pending("pending_counts") == []
    finally:
        await store.close()


class _Meanwhile:
    """A store's connection that runs another gateway's work once, right after the first
    statement containing ``after``: the interleaving a test needs, made certain."""

    def __init__(self, conn: Any, after: str, run: list[Callable[[], Awaitable[object]]]) -> None:
        self._conn, self._after, self._run = conn, after, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any) -> Any:
        rows = await self._conn.fetch(query, *args)
        if self._after in query and self._run:
            await self._run.pop()()
        return rows


def _meanwhile(monkeypatch: pytest.MonkeyPatch, store: Store, after: str,
               run: Callable[[], Awaitable[object]]) -> None:
    """From now on, ``run`` once right after the store's first statement containing
    ``after``, on whichever of its connections."""
    real = store._conn  # type: ignore[attr-defined]
    once = [run]

    @contextlib.asynccontextmanager
    async def interleaved(**options: Any) -> AsyncIterator[Any]:
        async with real(**options) as conn:
            yield _Meanwhile(conn, after, once)

    monkeypatch.setattr(store, "_conn", interleaved)


async def _no_rows(table: str = "") -> list[str]:
    """An Engine's pending rows where nobody looks at them."""
    return []


@contextlib.asynccontextmanager
async def _two_postgres_gateways() -> AsyncIterator[tuple[Store, Store, str, str]]:
    """Two gateways' stores on one fresh PostgreSQL schema, neither folding by itself;
    the URL and schema, to look behind them."""
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as schema:
        engine = Engine(lambda n: PostgresStore.open(url, schema=schema, fold_visitors=n),
                        _no_rows)
        store = await engine.open(fold_visitors=10**9)
        try:
            other = await engine.open(fold_visitors=10**9)
            try:
                yield store, other, url, schema
            finally:
                await other.close()
        finally:
            await store.close()


async def test_postgres_a_report_reads_from_one_snapshot_while_another_gateway_folds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another gateway folds between the report's read of the sketches and its read of the
    # visitors set aside: from one snapshot the report sees them set aside, as before the
    # fold; from two it would see them in neither place.
    clicks = _every_click()
    async with _two_postgres_gateways() as (store, other, url, schema):
        await store.record(clicks, [])
        # The other gateway's export folds every pending visitor first.
        _meanwhile(monkeypatch, store, "FROM visitor_sketches",
                   lambda: other.export_rollups("m1", before_day="2026-01-01"))
        report: Report = ("m1", "2026-10-30", "2026-11-02", "day", ())
        rows = await store.stats("m1", from_day=report[1], to_day=report[2], by="day")
        conn = await pg.connect(url, schema)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pending_visitors") == 0
        finally:
            await conn.close()
        for row in rows:
            truth = _expected(clicks, report)[row.key["day"]]
            assert abs(row.unique_visitors - truth) <= row.unique_visitors_error, row
        assert {r.key["day"] for r in rows} == set(_expected(clicks, report))


async def test_a_minute_after_the_last_fold_the_next_batch_folds_however_few(
        engine: Engine) -> None:
    store = await engine.open(fold_visitors=10**9)
    try:
        def click(merchant: str, visitor: str) -> Click:
            return Click(f"{merchant}-{next(_ids):05d}", merchant, 1, 1.0, "2026-11-01",
                         "taobao", "ua", visitor, "h")

        await store.record([click("m1", "a"), click("m2", "a")], [])
        assert sorted(await engine.pending()) == ["m1", "m2"]
        # Half a minute since the last fold, then a whole one.
        store._fold_schedule.folded_at = time.monotonic() - 30  # type: ignore[attr-defined]
        await store.record([click("m1", "b")], [])
        assert len(await engine.pending()) == 3
        store._fold_schedule.folded_at = time.monotonic() - 60  # type: ignore[attr-defined]
        await store.record([click("m2", "b")], [])
        assert await engine.pending() == []
        await store.record([click("m1", "c")], [])  # the minute starts again
        assert await engine.pending() == ["m1"]
        # A minute on, that one visitor is folded by the next batch, even one that sets
        # none aside (a bot's click).
        store._fold_schedule.folded_at = time.monotonic() - 60  # type: ignore[attr-defined]
        await store.record([click("m2", "bot")._replace(bot=True)], [])
        assert await engine.pending() == []
    finally:
        await store.close()


async def test_sqlite_a_fold_in_parts_folds_each_visitor_and_changes_no_figure(
        tmp_path: Path) -> None:
    # After a fold held SQLite's write lock too long (a busy CPU), folds go in parts,
    # oldest first; no visitor is lost or counted twice, and no figure changes.
    path = tmp_path / "linkloop.db"

    async def pending() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return [r[0] for r in conn.execute("SELECT merchant_id FROM pending_visitors")]

    engine = Engine(lambda n: SQLiteStore.open(path, fold_visitors=n), pending)
    clicks = _every_click()
    store = await engine.open(fold_visitors=10**9)
    try:
        for start in range(0, len(clicks), 4):  # a pending count row or more per batch
            await store.record(clicks[start:start + 4], [])
        before = await _figures(store)
        counted = await _counts(store)
        waiting = len(await pending())
    finally:
        await store.close()
    sqlite_store = await SQLiteStore.open(path, fold_visitors=waiting + 1)
    try:
        sqlite_store._fold_rows = 100  # as after a slow fold; few enough to keep
        await sqlite_store.record(clicks[:1], [])  # a replay: counts the pending, folds none
        assert len(await pending()) == waiting
        await sqlite_store.record([Click("m1-last", "m1", 1, 1.0, "2026-11-02", "jd", "ua",
                                         "v-last", "h")], [])
        assert await pending() == [] and sqlite_store._fold_rows == 100
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM pending_counts").fetchone()[0] == 0
        after = await _figures(sqlite_store)
        recounted = await _counts(sqlite_store)
    finally:
        await sqlite_store.close()
    # Only what the one new click is part of: m1's reports that reach 2026-11-02 (the
    # counts too, folded in the same parts: none lost, none twice).
    for old, new in ((before, after), (counted, recounted)):
        changed = {k for k in old.keys() | new.keys() if new.get(k) != old.get(k)}
        assert changed and all(report[0] == "m1" and report[2] >= "2026-11-02"
                               for report, _key in changed)


async def test_postgres_a_visitor_forgotten_while_they_click_is_not_counted_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The visitor clicks again, through another gateway, while their forget runs: the
    # forget deletes that click too (it reads the clicks after the fold), so no unique
    # visitor may stay of them, at m1, once the visitors set aside are folded.
    def click(merchant: str, day: str, visitor: str) -> Click:
        return Click(f"{merchant}-{next(_ids):05d}", merchant, 1, 1.0, day, "jd", "ua",
                     visitor, "h")

    async with _two_postgres_gateways() as (store, other, _url, _schema):
        await other.record([click("m1", "2026-11-01", "v"), click("m2", "2026-11-01", "v"),
                            click("m1", "2026-11-01", "u")], [])
        # Right after the forget's fold took the visitors set aside.
        _meanwhile(monkeypatch, store, "DELETE FROM pending_visitors",
                   lambda: other.record([click("m1", "2026-11-02", "v")], []))
        forgotten = await store.forget_visitor("v", "m1")
        assert forgotten["m1"]["clicks"] == 2  # the click made meanwhile too
        await store.export_rollups("m1", before_day="2026-01-01")  # folds
        for merchant, day, visitors in (("m1", "2026-11-01", 1), ("m1", "2026-11-02", 0),
                                        ("m2", "2026-11-01", 1)):
            (row,) = await store.stats(merchant, from_day=day, to_day=day, by="total")
            assert row.unique_visitors == visitors, (merchant, day)


#: A merchant's sketch lock, as the store takes it (postgres._add_to_sketches), in the
#: schema of the connection it runs on.
_SKETCH_LOCK = ("SELECT pg_advisory_xact_lock(hashtext('linkloop:sketches:' "
                "|| current_schema() || ':' || $1))")


async def test_postgres_a_merchant_of_the_same_id_in_another_schema_does_not_hold_up_a_fold(
        ) -> None:
    # Advisory locks span the database: two deployments (or two tests) in two schemas,
    # each with a merchant "m1", must not share m1's sketch lock, or one's fold would wait
    # for the other's (and a writer's fold, which waits 10 ms, would give up every time).
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as ours, pg.fresh_schema(url) as theirs:
        store = await Engine(lambda n: PostgresStore.open(url, schema=ours, fold_visitors=n),
                             _no_rows).open(fold_visitors=1)
        their_store = await PostgresStore.open(url, schema=theirs)
        try:
            # Their gateway adding to their m1's sketches: it holds their m1's sketch lock
            # until its transaction ends, as a fold does.
            async with their_store._conn() as held, held.transaction():
                await _add_to_sketches(held, {("m1", "cd", "2026-11-01", 0, "", ""): {7}})
                await store.record([Click("m1-c1", "m1", 1, 1.0, "2026-11-01", "jd", "ua",
                                          "v", "h")], [])
                conn = await pg.connect(url, ours)
                try:  # our fold went through: nothing of ours is left pending
                    assert await conn.fetchval("SELECT count(*) FROM pending_visitors") == 0
                finally:
                    await conn.close()
        finally:
            await their_store.close()
            await store.close()


async def test_postgres_an_import_and_another_gateways_fold_at_once_both_go_through() -> None:
    # A fold (here an export's) takes a merchant's sketch lock, then the counts set aside;
    # an import (add_rollups) that took the counts set aside first, then waited for that
    # merchant's sketch lock, would deadlock with it: PostgreSQL cancels one, and the
    # operator's export or import fails. Both take the locks in one order, so both go
    # through, and the import counts once.
    async with _two_postgres_gateways() as (store, other, url, schema):
        await store.record([Click("m1-c1", "m1", 1, 1.0, "2026-10-01", "jd", "ua", "v1",
                                  "h", outcome="redirect")], [])
        admin = await pg.connect(url, schema)

        async def waiting(count: int) -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                == count)

        try:
            # m1's sketch lock held, as by a writer folding m1's visitors: both queue for it.
            await admin.execute("BEGIN")
            await admin.execute(_SKETCH_LOCK, "m1")
            export = asyncio.ensure_future(other.export_rollups("m1", before_day="2026-11-01"))
            await until(lambda: waiting(1), what="the export's fold waits for m1's sketches")
            counts = (3, 0, 2, 1, 0, 2, 0, 1, 0, 0)
            imported = asyncio.ensure_future(store.add_rollups(
                [(("m1", 1, "2026-10-02", "jd", ""), counts)],
                [(("m1", "cd", "2026-10-02", 0, "", ""), add_hashes(None, {7, 8}))]))
            await until(lambda: waiting(2), what="the import waits for them too")
            await admin.execute("COMMIT")
            rows, _sketches = await export
            await imported
        finally:
            await admin.close()
        assert [(key[2], c[0]) for key, c in rows] in (
            [("2026-10-01", 1)], [("2026-10-01", 1), ("2026-10-02", 3)])
        by_day = await store.stats("m1", from_day="2026-10-01", to_day="2026-10-02", by="day")
        assert [(r.key["day"], r.clicks, r.redirects, r.unique_visitors) for r in by_day] == [
            ("2026-10-01", 1, 1, 1), ("2026-10-02", 3, 2, 2)]



async def test_a_fold_that_fails_leaves_the_batch_stored_and_the_writer_working(
        engine: Engine, request: pytest.FixtureRequest) -> None:
    # A fold that fails (here a counter table the fold cannot write) is rolled back and
    # logged: the batch before it is stored and counted, its rows stay set aside, and the
    # next batch is stored and folds them once the table can be written again.
    store = await engine.open(fold_visitors=1)
    sqlite = "sqlite" in request.node.callspec.id
    assert engine.execute is not None
    try:
        def click(visitor: str) -> Click:
            return Click(f"m1-{next(_ids):05d}", "m1", 1, 1.0, "2026-11-01", "taobao", "ua",
                         visitor, "h")

        async def clicks() -> int:
            return (await _day_total(store, "m1")).clicks

        if sqlite:
            await engine.execute("CREATE TRIGGER broken BEFORE INSERT ON rollups "
                                 "BEGIN SELECT * FROM no_such_table; END")
        else:
            await engine.execute(
                "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no_such_table'; END $$; "
                "CREATE TRIGGER broken BEFORE INSERT ON rollups "
                "FOR EACH ROW EXECUTE FUNCTION broken()")
        with structlog.testing.capture_logs() as logs:
            await store.record([click("a")], [])  # stored; its fold fails
        (failed,) = [e for e in logs if e["event"] == "store.fold_failed"]
        assert failed["pending"] == 1 and "no_such_table" in failed["error"]
        assert await engine.pending("pending_counts") == ["m1"]
        assert await engine.pending() == ["m1"]
        assert await clicks() == 1
        await engine.execute("DROP TRIGGER broken" + ("" if sqlite else " ON rollups"))
        await store.record([click("b")], [])  # stored, and folds both
        assert await engine.pending("pending_counts") == []
        assert await engine.pending() == []
        assert await clicks() == 2
    finally:
        await store.close()
