"""SQLite's own plumbing: opening and closing a file, its two threads, the write lock's
turns from the store's side (turns.py has its own tests), the errors a batch's insert
must not take for a replay, on real files."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.secretbox import SecretBox
from gateway.store import Credentials, Entry, StoreUnavailable
from gateway.store.migrations import SQLITE_MIGRATIONS
from gateway.store.sqlite import SQLiteStore
from gateway.store.turns import WriteTurns

from .test_store import click, event
from .test_write_turns import _two_merchants
from .wait import until


def _open_files(path: Path) -> list[str]:
    """The files of this database (itself, -wal, -shm, -turns) this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def _old_database(path: Path, version: int) -> None:
    """A database as the store's version ``version`` left it, with both merchants."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # as every version of the store made it
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at REAL NOT NULL)")
        for number, script in SQLITE_MIGRATIONS[:version]:
            _apply(conn, script)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
        conn.executemany("INSERT INTO merchants VALUES (?, ?, '[]', 0)",
                         [("m1", "One"), ("m2", "Two")])


def _apply(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


async def _past(seconds: float) -> None:
    """Until the clock is ``seconds`` past now (a call's deadline gone by)."""
    end = time.monotonic() + seconds
    await until(lambda: time.monotonic() > end, what=f"{seconds} s gone by")


async def test_a_closed_store_holds_no_file_open_and_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    threads = threading.active_count()
    store = await SQLiteStore.open(path, secrets=SecretBox([secrets.token_bytes(32)]))
    p1, p2 = await _two_merchants(store)
    await store.record([click(1, product=p1), click(2, merchant="m2", product=p2)], [])
    assert sorted({Path(f).name for f in _open_files(path)}) == [
        "linkloop.db", "linkloop.db-shm", "linkloop.db-turns", "linkloop.db-wal"]
    await store.close()
    assert _open_files(path) == []
    assert threading.active_count() == threads


async def test_closing_waits_for_a_write_that_outlasts_the_call_timeout(tmp_path: Path) -> None:
    # The gateway stops while a forget (no call deadline) waits for another process's
    # lock: the close waits for it too, past the timeout, and the forget commits.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=20, timeout_seconds=0.5)
    p1, p2 = await _two_merchants(store)
    await store.record([click(1, product=p1, visitor="a"),
                        click(2, merchant="m2", product=p2, visitor="a")], [])
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        forget = asyncio.create_task(store.forget_visitor("a", "m1"))
        closing = asyncio.create_task(store.close())
        await _past(1.0)
        assert not forget.done() and not closing.done()
        holder.execute("ROLLBACK")
        forgot = await asyncio.wait_for(forget, 20)
        await asyncio.wait_for(closing, 20)
    finally:
        holder.close()
    assert forgot["m1"]["clicks"] == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT merchant_id FROM clicks").fetchall() == [("m2",)]


async def test_an_open_that_fails_leaves_no_thread_behind_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    path.write_bytes(b"not a database, " * 512)  # storage.data_dir pointed at another file
    threads = threading.active_count()
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        await SQLiteStore.open(path)
    assert threading.active_count() == threads


@pytest.mark.parametrize("step", ["migrate", "seal"])
async def test_opening_waits_out_a_lock_held_past_the_call_timeout(tmp_path: Path,
                                                                   step: str) -> None:
    # Opening has no call deadline (it may migrate, or seal what an older version stored
    # plain): another process's write lock held longer than a call may wait is waited out.
    path = tmp_path / "linkloop.db"
    box = SecretBox([secrets.token_bytes(32)])
    if step == "migrate":  # the last migration not applied yet
        _old_database(path, len(SQLITE_MIGRATIONS) - 1)
    else:  # a plain secret, stored by a version before sealing
        first = await SQLiteStore.open(path, secrets=box)
        await _two_merchants(first)
        await first.close()
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO app_credentials (merchant_id, platform, app_id, secret, "
                         "updated_at) VALUES ('m2', 'wechat_miniprogram', 'wx1', 'plain', 1)")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        opening = asyncio.create_task(SQLiteStore.open(path, busy_timeout=20,
                                                       timeout_seconds=0.5, secrets=box))
        await _past(1.0)
        assert not opening.done()
        holder.execute("ROLLBACK")
        store = await asyncio.wait_for(opening, 20)
    finally:
        holder.close()
    try:
        assert await store.schema_version() == SQLITE_MIGRATIONS[-1][0]
        assert [m.id for m in await store.list_merchants()] == ["m1", "m2"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert "plain" not in [r[0] for r in conn.execute("SELECT secret FROM app_credentials")]


async def test_a_read_queued_behind_a_stuck_one_fails_at_its_deadline(tmp_path: Path) -> None:
    # One reader thread on one connection: a read stuck on a disk that stopped answering
    # holds it, and the reads behind it fail at their own deadlines meanwhile, but for an
    # export of a merchant's rollups, which has none (it reads a whole history).
    store = await SQLiteStore.open(tmp_path / "linkloop.db", timeout_seconds=0.5)
    p1, p2 = await _two_merchants(store)
    await store.record([click(1, product=p1), click(2, merchant="m2", product=p2)], [])
    gate = threading.Event()
    stuck = store._reader.submit(gate.wait)
    export = asyncio.create_task(store.export_rollups("m1", before_day="2026-12-01"))
    await asyncio.sleep(0)  # the export queued first: its deadline, had it one, is first too
    try:
        with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
            await asyncio.wait_for(store.get_merchant("m2"), 10)
        assert not export.done()
    finally:
        gate.set()
        await asyncio.wrap_future(stuck)
    rows, _sketches = await asyncio.wait_for(export, 20)
    assert [(key[0], values[0]) for key, values in rows] == [("m1", 1)]
    assert (await store.get_merchant("m2")) is not None
    await store.close()


async def test_a_secret_sealed_under_an_older_key_takes_no_lock_at_open(tmp_path: Path) -> None:
    # After a key rotation, secrets sealed under the old key stay so until `linkloop
    # secrets reseal`: an open only seals plain ones, and asks without the write lock.
    path = tmp_path / "linkloop.db"
    old_key = secrets.token_bytes(32)
    store = await SQLiteStore.open(path, secrets=SecretBox([old_key]))
    await _two_merchants(store)
    await store.put_entry(Entry("m1", "contact_way", {"users": ["zhangsan"]},
                                {"corp_id": "ww1", "secret": "s1"}))
    await store.put_credentials(Credentials("m2", "wechat_miniprogram", "wx1234567890abcdef",
                                            "s2"))
    await store.close()
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT secrets FROM entries UNION ALL "
                              "SELECT secret FROM app_credentials").fetchall()
    rotated = SecretBox([secrets.token_bytes(32), old_key])  # a new key first, the old kept
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        store = await SQLiteStore.open(path, busy_timeout=0.5, secrets=rotated)
    finally:
        holder.close()
    try:
        entry = await store.get_entry("m1")
        assert entry is not None and entry.secrets == {"corp_id": "ww1", "secret": "s1"}
        credentials = await store.get_credentials("m2", "wechat_miniprogram")
        assert credentials is not None and credentials.secret == "s2"
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT secrets FROM entries UNION ALL "
                            "SELECT secret FROM app_credentials").fetchall() == stored


async def test_a_batch_that_held_the_lock_briefly_keeps_batches_whole(tmp_path: Path) -> None:
    # 2,000 clicks on an idle machine hold the lock far less than half the busy timeout
    # (5 s): the next batch is written whole, in one transaction, as before.
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    try:
        p1, p2 = await _two_merchants(store)
        await store.record([click(n, merchant="m1" if n % 2 else "m2",
                                  product=p1 if n % 2 else p2, visitor=f"v{n}")
                            for n in range(2_000)], [])
        assert store._batch_rows is None
        for merchant in ("m1", "m2"):
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [r.clicks for r in rows] == [1_000]
    finally:
        await store.close()


async def test_a_batch_that_gets_the_lock_while_a_write_waits_its_turn_lets_it_in(
        tmp_path: Path) -> None:
    # Another worker's click writer holds the lock; ours waits for it past its first look
    # at the turns. A short write takes its turn meanwhile: when the lock comes free, ours
    # takes it, sees the write waiting, and gives it back; the batch goes after.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=20)
    other_writer = sqlite3.connect(path, isolation_level=None)
    short_write = WriteTurns(path)
    try:
        p1, p2 = await _two_merchants(store)
        other_writer.execute("BEGIN IMMEDIATE")
        batch = asyncio.create_task(store.record(
            [click(1, product=p1), click(2, merchant="m2", product=p2)], []))
        await asyncio.sleep(0.2)  # a head start: past its first look, waiting for the lock
        with short_write.waiting(0):
            other_writer.execute("ROLLBACK")
            # Ours asks SQLite again within 0.1 s (its busy handler): it gets the lock
            # before the short write asks for it, and must give it back.
            await asyncio.sleep(0.3)
            other_writer.execute("BEGIN IMMEDIATE")  # the short write's own transaction
            other_writer.execute("UPDATE merchants SET name = 'Two, renamed' WHERE id = 'm2'")
            other_writer.execute("COMMIT")
            assert not batch.done()  # it waits for the turn to end
        await asyncio.wait_for(batch, 20)
        for merchant in ("m1", "m2"):
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [r.clicks for r in rows] == [1]
        assert [(m.id, m.name) for m in await store.list_merchants()] == [
            ("m1", "One"), ("m2", "Two, renamed")]
    finally:
        short_write.close()
        other_writer.close()
        await store.close()




async def test_a_store_opens_in_a_data_directory_not_made_yet(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "linkloop" / "linkloop.db"  # a fresh install
    store = await SQLiteStore.open(path)
    try:
        await _two_merchants(store)
        assert [m.id for m in await store.list_merchants()] == ["m1", "m2"]
    finally:
        await store.close()
    assert path.is_file()


async def test_a_lock_held_elsewhere_fails_a_write_at_the_busy_timeout(tmp_path: Path) -> None:
    # storage.busy_timeout_seconds is how long a statement waits for another process's
    # lock: a short one fails the write as "locked", well before the call's own deadline.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=0.2, timeout_seconds=3)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await _two_merchants(store)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.update_merchant("m2", name="Two, renamed")
        holder.execute("ROLLBACK")
        assert [m.name for m in await store.list_merchants()] == ["One", "Two"]
    finally:
        holder.close()
        await store.close()


async def test_closing_waits_for_a_read_that_outlasts_the_call_timeout(tmp_path: Path) -> None:
    # An export (no call deadline) behind a read stuck on the disk: the close waits for
    # both, past the timeout, and the export still reads its rows.
    store = await SQLiteStore.open(tmp_path / "linkloop.db", timeout_seconds=0.5)
    p1, p2 = await _two_merchants(store)
    await store.record([click(1, product=p1), click(2, merchant="m2", product=p2)], [])
    gate = threading.Event()
    stuck = store._reader.submit(gate.wait)
    try:
        export = asyncio.create_task(store.export_rollups("m1", before_day="2026-12-01"))
        closing = asyncio.create_task(store.close())
        await _past(1.0)
        assert not export.done() and not closing.done()
    finally:
        gate.set()
        await asyncio.wrap_future(stuck)
    rows, _sketches = await asyncio.wait_for(export, 20)
    assert [(key[0], values[0]) for key, values in rows] == [("m1", 1)]
    await asyncio.wait_for(closing, 20)


async def test_a_worker_that_finds_a_migration_done_goes_on_to_the_next(tmp_path: Path) -> None:
    # serve --workers: another worker applied the first missing migration while this one
    # waited for the lock, then stopped (killed, or slow to go on): this one applies the
    # next itself, rather than open on a schema one version short.
    path = tmp_path / "linkloop.db"
    _old_database(path, len(SQLITE_MIGRATIONS) - 2)
    other = sqlite3.connect(path, isolation_level=None)
    ours = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        migrating = asyncio.ensure_future(asyncio.to_thread(SQLiteStore._migrate, ours))
        await asyncio.sleep(0.3)  # a head start: ours has looked, and waits for the lock
        version, script = SQLITE_MIGRATIONS[-2]
        _apply(other, script)
        SQLiteStore._backfill_sketches(other)
        other.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        other.execute("COMMIT")
        await asyncio.wait_for(migrating, 20)
    finally:
        ours.close()
        other.close()
    assert _versions(path) == [number for number, _ in SQLITE_MIGRATIONS]


async def test_a_migration_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    # A table of the console's migration (9) made by hand: the migration fails whole,
    # saying why, and its first statements (new product columns) are undone with it.
    path = tmp_path / "linkloop.db"
    _old_database(path, 8)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE channels (name TEXT)")
    with pytest.raises(StoreUnavailable, match="channels already exists"):
        await SQLiteStore.open(path)
    assert _versions(path) == list(range(1, 9))
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(products)")]
        assert "valid_from" not in columns
        assert conn.execute("SELECT id FROM merchants ORDER BY 1").fetchall() == [
            ("m1",), ("m2",)]


async def test_the_sketch_backfill_reaches_every_stored_click(tmp_path: Path) -> None:
    # Clicks stored before visitor sketches existed, more than one page of them (5,000),
    # the first with an id that sorts before any letter: each day of each merchant's
    # clicks gets its cells.
    path = tmp_path / "linkloop.db"
    _old_database(path, 7)
    first = ("0000first", "m1", "2026-10-01", "first")
    middle = [(f"click{n:08d}", f"m{n % 2 + 1}", "2026-11-01", f"v{n % 5}") for n in range(5_000)]
    last = ("zzzzlast", "m2", "2026-12-01", "last")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO clicks (id, merchant_id, product_id, ts, day, platform, source, "
            "channel, visitor, ip_hash, bot, mobile, os) "
            "VALUES (?, ?, 1, 1.0, ?, 'taobao', 'ua', NULL, ?, 'h', 0, 1, 'ios')",
            [first, *middle, last])
    store = await SQLiteStore.open(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT merchant_id, period FROM visitor_sketches "
                            "WHERE kind = 'cd' ORDER BY 1, 2").fetchall() == [
            ("m1", "2026-10-01"), ("m1", "2026-11-01"), ("m2", "2026-11-01"),
            ("m2", "2026-12-01")]


async def test_a_report_never_holds_up_a_share_link_lookup(tmp_path: Path) -> None:
    # A report may merge thousands of cells; a share link whose code missed the cache (and
    # /readyz) must not wait behind it. Reports run on a thread of their own: with that
    # thread busy, a report waits while the lookups and the ping are answered.
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    busy = threading.Event()
    try:
        await _two_merchants(store)
        store._reporter.submit(busy.wait, 30)  # a long report ahead of this one
        report = asyncio.ensure_future(store.stats("m1", from_day="2026-11-01",
                                                   to_day="2026-11-01", by="total"))
        for code, merchant in (("code0001", "m1"), ("code0002", "m2")):
            found = await asyncio.wait_for(store.link(code), 10)
            assert found is not None and found.merchant_id == merchant
        await asyncio.wait_for(store.ping(), 10)
        assert not report.done()
        busy.set()
        assert [r.clicks for r in await asyncio.wait_for(report, 10)] == [0]
    finally:
        busy.set()
        await store.close()


async def test_reports_asked_at_once_each_get_their_figures(tmp_path: Path) -> None:
    # Reports share one connection (each in a read transaction), so they take turns on
    # their own thread: run side by side, one's BEGIN would meet another's open transaction.
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    try:
        p1, _ = await _two_merchants(store)
        await store.record([click(n, product=p1, visitor=f"v{n % 3}") for n in range(6)], [])
        reports = await asyncio.gather(*(
            store.stats("m1", from_day="2026-11-01", to_day="2026-11-01", by="total")
            for _ in range(16)))
        assert [(r.clicks, r.unique_visitors) for (r,) in reports] == [(6, 3)] * 16
    finally:
        await store.close()


async def test_a_row_breaking_a_check_fails_its_batch_replayed_rows_in_it_or_not(
        tmp_path: Path) -> None:
    # The insert skips the rows whose ids are stored already (a replay). A row breaking any
    # other constraint (here an event kind the table does not know) fails its batch, whether
    # or not the batch also holds rows stored already: none of its rows is stored, and the
    # next batch goes in.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path)
    try:
        p1, p2 = await _two_merchants(store)
        first = [click(1, product=p1), click(2, merchant="m2", product=p2)]
        opened = event(1, product_id=p1, click_id=first[0].id)
        await store.record(first, [opened])
        bad = event(2, "no_such_kind", merchant_id="m2", product_id=p2)
        for events in ([bad], [opened, bad]):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint"):
                await store.record([*first, click(3, product=p1)], events)
        await store.record([click(4, merchant="m2", product=p2)], [])
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM clicks ORDER BY id").fetchall() == [
            (f"click{n:08d}",) for n in (1, 2, 4)]
        assert conn.execute("SELECT id FROM events").fetchall() == [(opened.id,)]


async def test_an_insert_that_takes_its_transaction_down_fails_as_itself(
        tmp_path: Path) -> None:
    # An INSERT interrupted (as an I/O error may end one) makes SQLite roll the whole
    # transaction back: the batch fails with SQLite's own error, and goes in whole when
    # sent again.
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    try:
        p1, p2 = await _two_merchants(store)
        batch = [click(1, product=p1), click(2, merchant="m2", product=p2)]
        inserting = False

        def trace(sql: str) -> None:
            nonlocal inserting
            inserting = sql.startswith("INSERT INTO clicks")

        store._wconn.set_trace_callback(trace)
        store._wconn.set_progress_handler(lambda: inserting, 1)
        with pytest.raises(StoreUnavailable, match=r"^interrupted$"):
            await store.record(batch, [])
        store._wconn.set_trace_callback(None)
        store._wconn.set_progress_handler(None, 1)
        await store.record(batch, [])
        for merchant in ("m1", "m2"):
            (total,) = await store.stats(merchant, from_day="2026-11-01",
                                         to_day="2026-11-01", by="total")
            assert total.clicks == 1
    finally:
        await store.close()
