"""SQLite's visitors set aside (gateway/store/pending.py): reports count them as the fold
will, a fold changes no figure, and a forget, an export and a restart lose none of them.

Every test has two merchants whose visitors would be confused (the same visitor ids at
both). The expected figures are the test's own: distinct visitor ids of the clicks it made.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.store import Click, Merchant, Store
from gateway.store.base import GroupBy
from gateway.store.sketch import EXACT_MAX
from gateway.store.sqlite import SQLiteStore

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


def _pending(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT merchant_id FROM pending_visitors")]


async def _open(path: Path, fold_visitors: int) -> SQLiteStore:
    store = await SQLiteStore.open(path, fold_visitors=fold_visitors)
    for merchant in MERCHANTS:
        if await store.get_merchant(merchant) is None:
            await store.create_merchant(Merchant(merchant, merchant.upper()))
    return store


async def test_a_fold_changes_no_figure(tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    clicks = [c for m in MERCHANTS for c in _clicks(m)]
    # Half the clicks folded into the sketches, the other half pending: the crowd's cells
    # hold 150 visitors each way, and pass EXACT_MAX only together.
    store = await _open(path, fold_visitors=1)
    try:
        await store.record(clicks[::2], [])
        assert _pending(path) == []
    finally:
        await store.close()
    store = await _open(path, fold_visitors=10**9)  # never folds
    try:
        await store.record(clicks[1::2], [])
        assert sorted(set(_pending(path))) == ["m1", "m2"]
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
    store = await _open(path, fold_visitors=1)
    try:
        await store.record(clicks[:3], [])
        assert _pending(path) == []
        assert await _figures(store) == pending
    finally:
        await store.close()


async def test_visitors_fold_once_as_many_as_the_setting_have_gathered(tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    store = await _open(path, fold_visitors=4)
    try:
        def click(merchant: str, visitor: str) -> Click:
            return Click(f"{merchant}-{next(_ids):05d}", merchant, 1, 1.0, "2026-11-01",
                         "taobao", "ua", visitor, "h")

        await store.record([click("m1", "a"), click("m2", "a"), click("m1", "b")], [])
        assert sorted(_pending(path)) == ["m1", "m1", "m2"]
        await store.record([click("m2", "b")], [])  # the fourth
        assert _pending(path) == []
        await store.record([click("m1", "c")], [])
        assert _pending(path) == ["m1"]
        for merchant, visitors in (("m1", 3), ("m2", 2)):
            (row,) = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                       by="total")
            assert (row.unique_visitors, row.unique_visitors_error) == (visitors, 0)
    finally:
        await store.close()


async def test_pending_visitors_survive_a_restart_and_a_forget_takes_them_out(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    clicks = [c for m in MERCHANTS for c in _clicks(m)]
    store = await _open(path, fold_visitors=10**9)
    try:
        await store.record(clicks, [])
        before = await _figures(store)
    finally:
        await store.close()
    store = await _open(path, fold_visitors=10**9)
    try:
        assert await _figures(store) == before
        # v0 came on 2026-10-30 (n = 0, 90: a bot at 0) and more; forgotten at m1 only.
        forgotten = await store.forget_visitor("v0", "m1")
        assert forgotten["m1"]["clicks"] == sum(
            1 for c in clicks if c.merchant_id == "m1" and c.visitor == "v0")
        after = await _figures(store)
    finally:
        await store.close()
    assert _pending(path) == []  # folded first, then cleaned in the sketches
    left = [c for c in clicks if not (c.merchant_id == "m1" and c.visitor == "v0")]
    for (report, key), (visitors, error) in after.items():
        if error == 0:
            assert visitors == _expected(left, report)[key], (report, key)
        if report[0] == "m2":
            assert (visitors, error) == before[(report, key)]


async def test_an_export_carries_the_visitors_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    clicks = [c for m in MERCHANTS for c in _clicks(m)]
    store = await _open(path, fold_visitors=10**9)
    try:
        await store.record(clicks, [])
        for merchant in MERCHANTS:
            _rows, sketches = await store.export_rollups(merchant, before_day="2026-11-01")
            assert all(cell[0] == merchant for cell, _s in sketches)
            # October's day cells of the kind by channel alone (every product and platform
            # summed): small, so exact sketches, 8 bytes a visitor after the kind's byte.
            days = {cell[2]: (len(sketch) - 1) // 8 for cell, sketch in sketches
                    if cell[1] == "cd" and cell[5] == ""}
            report: Report = (merchant, "2026-10-01", "2026-10-31", "day", (("channel", ""),))
            assert days == _expected(clicks, report) != {}
        assert _pending(path) == []
    finally:
        await store.close()


async def test_a_fold_in_parts_folds_each_visitor_and_changes_no_figure(tmp_path: Path) -> None:
    # After a fold held the lock too long (a busy CPU), folds go in parts, oldest first;
    # the count of those pending stays right between parts, and no figure changes.
    path = tmp_path / "linkloop.db"
    clicks = [c for m in MERCHANTS for c in _clicks(m)]
    store = await _open(path, fold_visitors=10**9)
    try:
        await store.record(clicks, [])
        before = await _figures(store)
        pending = len(_pending(path))
    finally:
        await store.close()
    store = await _open(path, fold_visitors=pending + 1)
    try:
        store._fold_rows = 100  # as after a slow fold; few enough to keep (_FEWEST_ROWS)
        await store.record(clicks[:1], [])  # a replay: counts the pending, folds none
        assert len(_pending(path)) == pending
        await store.record([Click("m1-last", "m1", 1, 1.0, "2026-11-02", "jd", "ua", "v-last",
                                  "h")], [])
        assert _pending(path) == [] and store._fold_rows == 100
        after = await _figures(store)
    finally:
        await store.close()
    changed = {k for k in after if after[k] != before.get(k)}
    # Only what the one new visitor is part of: m1's reports that reach 2026-11-02.
    assert changed and all(report[0] == "m1" and report[2] >= "2026-11-02"
                           for report, _key in changed)


async def test_a_minute_after_the_last_fold_the_next_batch_folds_however_few(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    store = await _open(path, fold_visitors=10**9)
    try:
        def click(merchant: str, visitor: str) -> Click:
            return Click(f"{merchant}-{next(_ids):05d}", merchant, 1, 1.0, "2026-11-01",
                         "taobao", "ua", visitor, "h")

        await store.record([click("m1", "a"), click("m2", "a")], [])
        assert sorted(_pending(path)) == ["m1", "m2"]
        store._folded_at = time.monotonic() - 30  # half a minute since
        await store.record([click("m1", "b")], [])
        assert len(_pending(path)) == 3
        store._folded_at = time.monotonic() - 60  # a minute
        await store.record([click("m2", "b")], [])
        assert _pending(path) == []
        await store.record([click("m1", "c")], [])  # the minute starts again
        assert _pending(path) == ["m1"]
    finally:
        await store.close()
