"""Nothing accepted is lost: storage away, memory full, shutdown, torn journal lines; and
when the journal fails too, clicks wait in memory and any loss is counted."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.clicklog import ClickLog
from gateway.recorder import Journal, Recorder
from gateway.store import Click, Merchant
from gateway.store.sqlite import SQLiteStore

from .wait import until


def _click(n: int) -> Click:
    return Click(id=f"c{n:011d}", merchant_id="m1", product_id=1, ts=1.0, day="2026-11-01",
                 platform="taobao", source="ua", visitor=f"v{n}", ip_hash="h")


async def _open(tmp_path: Path) -> SQLiteStore:
    store = await SQLiteStore.open(tmp_path / "rec.db", busy_timeout=0.05)
    await store.create_merchant(Merchant("m1", "One"))
    return store


async def _clicks_counted(store: SQLiteStore) -> int:
    rows = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01", by="platform")
    return sum(r.clicks for r in rows)


def _recorder(store: SQLiteStore, tmp_path: Path, **kw: float) -> Recorder:
    options = {"queue_size": 1000, "flush_interval": 0.02, "batch_size": 100,
               "retry_max": 0.1, **kw}
    return Recorder(store, Journal(tmp_path / "journal"), **options)  # type: ignore[arg-type]


def _lock(tmp_path: Path) -> sqlite3.Connection:
    """Another process holds the database, so every write fails. Returns that process's
    connection: its ROLLBACK ends the outage."""
    blocker = sqlite3.connect(tmp_path / "rec.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


def _break_journal(tmp_path: Path) -> Path:
    """A file where the journal's directory should be: every journal write fails (even as
    root, unlike a read-only mode). Unlink it to mend the journal."""
    journal = tmp_path / "journal"
    journal.write_text("a file where the journal's directory should be")
    return journal


async def _journaled_in_an_outage(tmp_path: Path, recorder: Recorder,
                                  clicks: int) -> sqlite3.Connection:
    """Storage locked (``_lock``), so ``clicks`` clicks go to the journal."""
    blocker = _lock(tmp_path)
    for n in range(clicks):
        recorder.click(_click(n))
    await until(lambda: recorder.journaled == clicks, what="every click journaled")
    assert not recorder.storage_ok
    return blocker


async def test_clicks_reach_storage_on_the_flush_timer(tmp_path: Path) -> None:
    # A batch far from full goes out on the timer alone: nobody flushes or closes here.
    store = await _open(tmp_path)
    recorder = _recorder(store, tmp_path, flush_interval=0.25)
    recorder.start()
    for n in range(10):
        recorder.click(_click(n))
    assert await until(lambda: _clicks_counted(store)) == 10
    await recorder.close()
    await store.close()


async def test_storage_away_then_back_loses_nothing(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    recorder = _recorder(store, tmp_path)
    recorder.start()
    blocker = await _journaled_in_an_outage(tmp_path, recorder, 50)
    assert (tmp_path / "journal").exists()
    for n in range(50, 60):
        recorder.click(_click(n))
    blocker.execute("ROLLBACK")
    blocker.close()
    await until(lambda: recorder.storage_ok and not recorder.journal.has_rows()
                and not recorder.pending, what="storage back and the journal replayed")
    assert await _clicks_counted(store) == 60
    await recorder.close()
    await store.close()


async def test_after_an_outage_journaled_clicks_arrive_without_waiting_for_new_ones(
        tmp_path: Path) -> None:
    # A quiet night: the database comes back, but no shopper clicks for hours. The clicks
    # journaled during the outage must still reach the stats.
    store = await _open(tmp_path)
    recorder = _recorder(store, tmp_path)
    recorder.start()
    blocker = await _journaled_in_an_outage(tmp_path, recorder, 20)
    blocker.execute("ROLLBACK")
    blocker.close()
    await until(lambda: not recorder.journal.has_rows(), what="the journal replayed")
    assert await _clicks_counted(store) == 20
    assert recorder.storage_ok
    await recorder.close()
    await store.close()


async def test_full_memory_spills_to_the_journal_and_is_replayed(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    recorder = _recorder(store, tmp_path, queue_size=5, flush_interval=60)
    for n in range(20):
        recorder.click(_click(n))
    assert recorder.pending == 5 and recorder.overflowed == 15
    recorder.start()  # the first thing the task does is replay the journal
    await until(lambda: not recorder.journal.has_rows(), what="the journal replayed")
    await recorder.close()
    assert await _clicks_counted(store) == 20
    await store.close()


async def test_shutdown_with_storage_away_journals_and_next_start_replays(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    recorder = _recorder(store, tmp_path, flush_interval=60)
    recorder.start()
    blocker = _lock(tmp_path)
    for n in range(30):
        recorder.click(_click(n))
    await recorder.close()
    assert recorder.journaled == 30
    blocker.execute("ROLLBACK")
    blocker.close()
    # A torn last line (the process died mid-write) is skipped, not fatal.
    with open(tmp_path / "journal" / "pending-w0.jsonl", "a") as fh:
        fh.write('{"kind": "click", "id": "c0')
    again = _recorder(store, tmp_path)
    again.start()
    await until(lambda: not again.journal.has_rows(), what="the journal replayed")
    await again.close()
    assert await _clicks_counted(store) == 30
    assert not again.journal.has_rows()
    await store.close()


async def test_a_dead_workers_journal_is_taken_over(tmp_path: Path) -> None:
    """serve --workers: a worker that died leaves its journal; another one replays it."""
    import os

    store = await _open(tmp_path)
    dead = Journal(tmp_path / "journal", owner="w3")
    dead.append([_click(n) for n in range(7)])
    live = Journal(tmp_path / "journal", owner="w0")
    assert live.claim() == []  # fresh: its owner may still be writing
    old = os.stat(dead.pending).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(dead.pending, (old, old))
    recorder = Recorder(store, live, queue_size=100, flush_interval=0.02, batch_size=100,
                        retry_max=0.1)
    recorder.start()
    await until(lambda: not dead.has_rows(), what="the dead worker's journal replayed")
    await recorder.close()
    assert await _clicks_counted(store) == 7
    assert not live.has_rows()
    await store.close()


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_clicks_wait_in_memory_while_storage_and_journal_fail(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    journal = _break_journal(tmp_path)
    recorder = _recorder(store, tmp_path, batch_size=5)
    recorder.start()
    blocker = _lock(tmp_path)
    for n in range(20):
        recorder.click(_click(n))
    await _until(lambda: not recorder.durable, "not durable")
    assert recorder.pending == 20 and recorder.dropped == 0
    # The disk is back first: the held clicks go to the journal, storage still locked.
    journal.unlink()
    await _until(lambda: recorder.journaled == 20 and not recorder.pending, "journaled")
    assert recorder.durable and not recorder.storage_ok
    blocker.execute("ROLLBACK")
    blocker.close()
    await _until(lambda: recorder.storage_ok and not recorder.journal.has_rows(), "replayed")
    assert await _clicks_counted(store) == 20
    await recorder.close()
    await store.close()


async def test_shutdown_with_storage_and_journal_failing_counts_and_logs_the_loss(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.logs import configure_logging

    configure_logging("info", "json")
    store = await _open(tmp_path)
    _break_journal(tmp_path)
    recorder = _recorder(store, tmp_path, flush_interval=60)
    recorder.start()
    blocker = _lock(tmp_path)
    for n in range(30):
        recorder.click(_click(n))
    capsys.readouterr()
    await recorder.close()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert recorder.dropped == 30 and recorder.pending == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    assert [(line["reason"], line["dropped"]) for line in lines
            if line["event"] == "recorder.clicks_dropped"] == [("closing", 30)]
    await store.close()


class _Watched:
    """The store, and what the recorder showed (``pending``, log segments) at each batch it
    wrote: the recorder's sink, as the writer process would be."""

    def __init__(self, store: SQLiteStore, segments: Path) -> None:
        self.store, self.segments = store, segments
        self.recorder: Recorder | None = None
        self.seen: list[tuple[int, int, int]] = []  # (clicks, pending, segment files)

    async def record(self, clicks: list[Click], events: list[object]) -> None:
        assert self.recorder is not None
        self.seen.append((len(clicks), self.recorder.pending,
                          len(list(self.segments.glob("*.log")))))
        await self.store.record(clicks, [])


async def test_a_backlog_is_stored_a_batch_at_a_time(tmp_path: Path) -> None:
    # 350 clicks wait in the click log (the writer behind a flash sale): they are stored a
    # batch of 100 at a time, and each batch, once stored, leaves /readyz's pending count
    # and frees its log segments, instead of all 350 staying pending until the last lands.
    # Segments hold ~25 clicks here: a batch spanning several is still one write (one
    # transaction, its clicks sharing rollup rows and sketch cells), not one per segment.
    store = await _open(tmp_path)
    sink = _Watched(store, tmp_path / "clicklog")
    recorder = Recorder(sink, Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                        queue_size=1000, flush_interval=60, batch_size=100, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog", segment_bytes=4096))
    sink.recorder = recorder
    for n in range(350):
        recorder.click(_click(n))
    await recorder.flush()
    assert [(clicks, pending) for clicks, pending, _ in sink.seen] == [
        (100, 350), (100, 250), (100, 150), (50, 50)]
    files = [segments for *_, segments in sink.seen]
    assert files == sorted(files, reverse=True) and files[-1] < files[0]
    assert (recorder.pending, await _clicks_counted(store)) == (0, 350)
    assert recorder.oldest_pending is None
    await recorder.close()
    await store.close()


async def test_clicks_arriving_while_a_batch_is_written_are_counted_once(tmp_path: Path,
                                                                         ) -> None:
    # 30 clicks are being written when 120 more arrive: a full batch is cut from the 30
    # and 70 of the new ones. The 30 must not be counted again in it: pending steps down
    # 30 -> 120 -> 50 -> 0 and every click is stored once.
    store = await _open(tmp_path)
    sink = _Watched(store, tmp_path / "clicklog")
    recorder = Recorder(sink, Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                        queue_size=1000, flush_interval=60, batch_size=100, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog"))
    sink.recorder = recorder
    for n in range(30):
        recorder.click(_click(n))
    arrivals = iter([range(30, 150)])

    async def record(clicks: list[Click], events: list[object]) -> None:
        await _Watched.record(sink, clicks, events)
        for n in next(arrivals, ()):
            recorder.click(_click(n))

    sink.record = record  # type: ignore[method-assign]
    await recorder.flush()
    assert [(clicks, pending) for clicks, pending, _ in sink.seen] == [
        (30, 30), (70, 120), (50, 50)]
    assert (recorder.pending, await _clicks_counted(store)) == (0, 150)
    await recorder.close()
    await store.close()
