"""SQLite's one write lock, shared by the click writer and the gateway's own writes.

Behind a spike the click writer writes batch after batch. A console save or a stored WeCom
callback that waits for the lock must get it before the writer's next transaction, not
whenever SQLite's busy handler happens to try in the moment the lock is free (it failed
after storage.timeout_seconds on one busy CPU). These tests use two stores on one real
file, as the gateway and its writer child have, and a real process for a killed holder.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.store import Event, Merchant
from gateway.store.sqlite import SQLiteStore, _rows_within_hold
from gateway.store.turns import WriteTurns

from .test_store import click, event
from .wait import until, until_sync


def _turns_file(database: Path) -> Path:
    return database.with_name(database.name + "-turns")


def _someone_waits(path: Path) -> bool:
    """Whether a short write holds its turn (its shared lock on the turns file)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def _two_merchants(store: SQLiteStore) -> tuple[int, int]:
    await store.create_merchant(Merchant("m1", "One"))
    await store.create_merchant(Merchant("m2", "Two"))
    ids = []
    for merchant, code in (("m1", "code0001"), ("m2", "code0002")):
        product = await store.create_product(
            merchant, code=code, title="Tea", targets={"taobao": {"item_id": "123456"}},
            image_url=None, price="1.00")
        ids.append(product.id)
    return ids[0], ids[1]


async def test_a_write_waiting_for_the_lock_goes_before_the_click_writers_next_batch(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    gateway = await SQLiteStore.open(path, busy_timeout=20)
    writer = await SQLiteStore.open(path, busy_timeout=20)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        p1, _ = await _two_merchants(gateway)
        holder.execute("BEGIN IMMEDIATE")  # a batch of the writer's, in progress
        save = asyncio.create_task(gateway.update_merchant("m2", name="Two, renamed"))
        await until(lambda: _someone_waits(_turns_file(path)), what="the save waits")
        batch = asyncio.create_task(writer.record(
            [click(n, product=p1, visitor=f"v{n}") for n in range(20_000)], []))
        await asyncio.sleep(0)  # the batch is on the writer's thread, asking for the lock
        holder.execute("ROLLBACK")  # that batch commits: who goes next?

        finished: list[str] = []
        save.add_done_callback(lambda _: finished.append("save"))
        batch.add_done_callback(lambda _: finished.append("batch"))
        await asyncio.wait_for(asyncio.gather(save, batch), 60)
        assert finished == ["save", "batch"]
        renamed = await gateway.get_merchant("m2")
        assert renamed is not None and renamed.name == "Two, renamed"
        rows = await gateway.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform")
        assert [r.clicks for r in rows] == [20_000]
        assert await gateway.stats("m2", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform") == []
    finally:
        holder.close()
        await writer.close()
        await gateway.close()


async def test_a_batch_written_in_several_transactions_counts_each_row_once(
        tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    try:
        p1, p2 = await _two_merchants(store)
        clicks = [click(n, merchant="m1" if n % 3 else "m2", product=p1 if n % 3 else p2,
                        visitor=f"v{n % 7}") for n in range(60)]
        # Each add comes before its click in the batch, so most land in an earlier
        # transaction than their click: they count once the click is in.
        adds = [Event(id=f"event{n:08d}", merchant_id=c.merchant_id, product_id=c.product_id,
                      click_id=c.id, target="", kind="add", platform="taobao", ts=1.0,
                      day="2026-11-01") for n, c in enumerate(reversed(clicks)) if n % 2]
        opens = [event(1000 + n, product_id=p1) for n in range(5)]
        store._batch_rows = 7  # as after a slow transaction (a busy CPU)
        await store.record(clicks, [*adds, *opens])
        await store.record(clicks, [*adds, *opens])  # a replay, after an unclear failure

        for merchant in ("m1", "m2"):
            mine = [c for c in clicks if c.merchant_id == merchant]
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [(r.clicks, r.unique_visitors, r.adds, r.storefront_opens)
                    for r in rows] == [(
                        len(mine), len({c.visitor for c in mine}),
                        sum(a.merchant_id == merchant for a in adds),
                        len(opens) if merchant == "m1" else 0)]
    finally:
        await store.close()


def test_the_click_writer_waits_for_a_waiting_write_no_longer_than_its_limit(
        tmp_path: Path) -> None:
    database = tmp_path / "linkloop.db"
    stuck, writer = WriteTurns(database), WriteTurns(database)
    try:
        with stuck.waiting():  # a write that never finishes (a stopped process)
            done = threading.Event()
            threading.Thread(target=lambda: (writer.let_waiting_writes_in(0.2), done.set()),
                             daemon=True).start()
            until_sync(done.is_set, what="the writer went on after its limit")
    finally:
        stuck.close()
        writer.close()


def test_a_killed_process_that_was_waiting_for_the_lock_never_holds_the_writer_up(
        tmp_path: Path) -> None:
    database = tmp_path / "linkloop.db"
    waiting = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from gateway.store.turns import WriteTurns; "
         "turns = WriteTurns(Path(sys.argv[1])); held = turns.waiting(); held.__enter__(); "
         "print('waiting', flush=True); time.sleep(600)", str(database)],
        stdout=subprocess.PIPE, text=True)
    writer = WriteTurns(database)
    try:
        assert waiting.stdout is not None and waiting.stdout.readline() == "waiting\n"
        assert _someone_waits(writer.path)
        waiting.kill()
        waiting.wait()
        done = threading.Event()
        # A limit far beyond the poll's deadline: only the kernel's release lets it go.
        threading.Thread(target=lambda: (writer.let_waiting_writes_in(600), done.set()),
                         daemon=True).start()
        until_sync(done.is_set, what="the writer went on once the waiting process died")
    finally:
        waiting.kill()
        writer.close()


@pytest.mark.parametrize(("rows", "held", "expected"), [
    (20_000, 8.0, 6_250),     # one busy CPU: to hold it 2.5 s, not 8 s
    (6_250, 0.5, 31_250),     # the CPU is free again: back up at the same pace
    (20_000, 2.5, 20_000),
    (600, 10.0, 500),         # however slow, a transaction takes 500 at least
    (10, 0.0, 25_000_000),    # too quick to time: no limit worth the name
])
def test_a_batchs_next_transaction_takes_what_fits_in_its_hold_at_the_last_ones_pace(
        rows: int, held: float, expected: int) -> None:
    assert _rows_within_hold(rows, held, 2.5) == expected
