"""Nothing accepted is lost: storage away, memory full, shutdown, torn journal lines; and
when the journal fails too, clicks wait in memory and any loss is counted."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.clicklog import ClickLog
from gateway.recorder import Journal, Recorder
from gateway.store import Click, Event, Merchant, StoreUnavailable
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


async def _replayed_after_the_outage(recorder: Recorder, blocker: sqlite3.Connection) -> None:
    """Storage back (``_lock``'s holder lets go): the recorder replays its journal, then
    closes."""
    blocker.execute("ROLLBACK")
    blocker.close()
    recorder.start()
    await until(lambda: not recorder.journal.has_rows(), what="the journal replayed")
    await recorder.close()


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


async def test_clicks_wait_in_memory_while_storage_and_journal_fail(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    journal = _break_journal(tmp_path)
    recorder = _recorder(store, tmp_path, batch_size=5)
    recorder.start()
    blocker = _lock(tmp_path)
    for n in range(20):
        recorder.click(_click(n))
    await until(lambda: not recorder.durable, what="not durable")
    assert recorder.pending == 20 and recorder.dropped == 0
    # The disk is back first: the held clicks go to the journal, storage still locked.
    journal.unlink()
    await until(lambda: recorder.journaled == 20 and not recorder.pending, what="journaled")
    assert recorder.durable and not recorder.storage_ok
    blocker.execute("ROLLBACK")
    blocker.close()
    await until(lambda: recorder.storage_ok and not recorder.journal.has_rows(),
                what="replayed")
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
        self.oldest: list[float | None] = []  # the oldest pending row's time (writer lag)

    async def record(self, clicks: list[Click], events: list[Event]) -> None:
        assert self.recorder is not None
        self.seen.append((len(clicks), self.recorder.pending,
                          len(list(self.segments.glob("*.log")))))
        self.oldest.append(self.recorder.oldest_pending)
        await self.store.record(clicks, events)


def _watched_recorder(store: SQLiteStore, tmp_path: Path, **log: int,
                      ) -> tuple[_Watched, Recorder]:
    """A recorder with a click log, writing to a watched store in batches of 100, only
    when told to flush."""
    sink = _Watched(store, tmp_path / "clicklog")
    sink.recorder = Recorder(sink, Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                             queue_size=1000, flush_interval=60, batch_size=100,
                             retry_max=0.1, clicklog=ClickLog(tmp_path / "clicklog", **log))
    return sink, sink.recorder


async def test_a_backlog_is_stored_a_batch_at_a_time(tmp_path: Path) -> None:
    # 350 clicks wait in the click log (the writer behind a flash sale): they are stored a
    # batch of 100 at a time, and each batch, once stored, leaves /readyz's pending count
    # and frees its log segments, instead of all 350 staying pending until the last lands.
    # Segments hold ~25 clicks here: a batch spanning several is still one write (one
    # transaction, its clicks sharing rollup rows and sketch cells), not one per segment.
    store = await _open(tmp_path)
    sink, recorder = _watched_recorder(store, tmp_path, segment_bytes=4096)
    for n in range(350):
        recorder.click(_click(n))
    await recorder.flush()
    assert [(clicks, pending) for clicks, pending, _ in sink.seen] == [
        (100, 350), (100, 250), (100, 150), (50, 50)]
    files = [segments for *_, segments in sink.seen]
    assert files == sorted(files, reverse=True) and files[-1] < files[0]
    assert (recorder.pending, await _clicks_counted(store)) == (0, 350)
    assert (recorder.written, recorder.clicks_written, recorder.clicks_taken) == (350, 350, 350)
    assert recorder.oldest_pending is None
    await recorder.close()
    await store.close()


async def test_clicks_arriving_while_a_batch_is_written_are_counted_once(tmp_path: Path,
                                                                         ) -> None:
    # 30 clicks are being written when 120 more arrive: a full batch is cut from the 30
    # and 70 of the new ones. The 30 must not be counted again in it: pending steps down
    # 30 -> 120 -> 50 -> 0 and every click is stored once.
    store = await _open(tmp_path)
    sink, recorder = _watched_recorder(store, tmp_path)
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


async def test_the_writer_lag_follows_the_oldest_row_still_in_the_click_log(
        tmp_path: Path) -> None:
    # GET /metrics' writer lag is the age of the oldest pending row: as a backlog is stored a
    # batch at a time, it is the first row of the batch being written, then nothing.
    store = await _open(tmp_path)
    sink, recorder = _watched_recorder(store, tmp_path)
    for n in range(250):
        recorder.click(_click(n)._replace(ts=1000.0 + n))
    assert recorder.oldest_pending == 1000.0
    await recorder.flush()
    assert sink.oldest == [1000.0, 1100.0, 1200.0]
    assert recorder.oldest_pending is None
    recorder.click(_click(250)._replace(ts=2000.0))  # the log empty again: a new oldest
    assert recorder.oldest_pending == 2000.0
    await recorder.close()
    assert not list((tmp_path / "clicklog").glob("*.log"))  # all stored: nothing left over
    await store.close()


async def test_clicks_and_events_arriving_while_a_batch_is_written_are_counted_once(
        tmp_path: Path) -> None:
    # As above with events too: 15 clicks and 15 events are being written when 60 of each
    # arrive. The batch cut meanwhile counted the 30 of both kinds; neither kind may be
    # counted twice: pending steps down 30 -> 120 -> 50 -> 0.
    store = await _two_merchants(tmp_path)
    sink, recorder = _watched_recorder(store, tmp_path)
    _mixed(recorder, 15, 15)
    arrived = False

    async def record(clicks: list[Click], events: list[Event]) -> None:
        nonlocal arrived
        await _Watched.record(sink, clicks, events)
        if not arrived:
            arrived = True
            for n in range(15, 75):
                merchant = ("m1", "m2")[n % 2]
                recorder.click(_row(n, merchant))
                recorder.event(_opened(n, merchant))

    sink.record = record  # type: ignore[method-assign]
    await recorder.flush()
    assert [(clicks, pending) for clicks, pending, _ in sink.seen] == [
        (15, 30), (35, 120), (25, 50)]
    assert (recorder.pending, recorder.written, recorder.clicks_written) == (0, 150, 75)
    assert _stored(store) == [("m1", 38, 38), ("m2", 37, 37)]
    await recorder.close()
    await store.close()


# --- events, the click log's own paths, and the counters /readyz and /metrics show --------
def _row(n: int, merchant: str) -> Click:
    return Click(id=f"{merchant}c{n:09d}", merchant_id=merchant, product_id=1, ts=1.0,
                 day="2026-11-01", platform="taobao", source="ua", visitor=f"v{n}",
                 ip_hash="h")


def _opened(n: int, merchant: str) -> Event:
    """A storefront open after click ``n``: an event, of the rows the recorder takes."""
    return Event(id=f"{merchant}e{n:09d}", merchant_id=merchant, product_id=1,
                 kind="storefront_open", platform="taobao", ts=2.0, day="2026-11-01",
                 click_id=f"{merchant}c{n:09d}", target="taobao")


async def _two_merchants(tmp_path: Path) -> SQLiteStore:
    store = await _open(tmp_path)
    await store.create_merchant(Merchant("m2", "Two"))
    return store


async def _nowhere_to_put(tmp_path: Path, **options: Any,
                          ) -> tuple[SQLiteStore, Recorder, sqlite3.Connection]:
    """Two merchants' storage, locked by another process (its connection: the outage's
    end), a broken journal, and a recorder over them that flushes only when told."""
    store = await _two_merchants(tmp_path)
    _break_journal(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), flush_interval=60,
                        retry_max=0.1, **options)
    return store, recorder, _lock(tmp_path)


def _stored(store: SQLiteStore) -> list[tuple[str, int, int]]:
    """Per merchant: the clicks and the events storage holds."""
    conn = store._rconn  # the test reads what storage holds
    return [(m, conn.execute("SELECT COUNT(*) FROM clicks WHERE merchant_id = ?",
                             (m,)).fetchone()[0],
             conn.execute("SELECT COUNT(*) FROM events WHERE merchant_id = ?",
                          (m,)).fetchone()[0]) for m in ("m1", "m2")]


def _mixed(recorder: Recorder, clicks: int, events: int) -> None:
    """``clicks`` clicks and ``events`` events, alternating merchants."""
    for n in range(max(clicks, events)):
        merchant = ("m1", "m2")[n % 2]
        if n < clicks:
            recorder.click(_row(n, merchant))
        if n < events:
            recorder.event(_opened(n, merchant))


@pytest.mark.parametrize(("clicklog", "events"), [(True, 6), (False, 10)],
                         ids=["clicklog", "memory"])
async def test_a_full_batch_of_clicks_and_events_is_written_at_once(
        tmp_path: Path, clicklog: bool, events: int) -> None:
    # The flush timer is a minute off: a batch (10) goes out as soon as it is full: in the
    # click log, its 10th row of either kind; in memory (no log), the 10th of one kind.
    # Clicks and events are both written, and every counter says so (an event is
    # written, never a click).
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=1000,
                        flush_interval=60, batch_size=10, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog") if clicklog else None)
    recorder.start()
    _mixed(recorder, 4, events - 1)
    assert recorder.pending == 4 + events - 1 and recorder.clicks_taken == 4
    recorder.event(_opened(events - 1, "m1" if events % 2 else "m2"))  # the batch is full
    await until(lambda: recorder.written == 4 + events, what="the full batch written")
    assert _stored(store) == [("m1", 2, events // 2), ("m2", 2, events // 2)]
    assert (recorder.written, recorder.clicks_written, recorder.clicks_taken,
            recorder.pending, recorder.journaled) == (4 + events, 4, 4, 0, 0)
    await recorder.close()
    await store.close()


async def test_the_click_logs_rows_are_journaled_while_storage_is_away(tmp_path: Path) -> None:
    # Rows in the click log (two batches, over several segments) meet a locked database:
    # the journal takes them (clicks and events alike, counted once), the log lets go of
    # them, and the replay stores them.
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=1000,
                        flush_interval=0.02, batch_size=50, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog", segment_bytes=4096))
    blocker = _lock(tmp_path)
    _mixed(recorder, 60, 40)
    assert len(list((tmp_path / "clicklog").glob("*.log"))) > 2
    with structlog.testing.capture_logs() as logs:
        await recorder.flush()
    assert [(e["event"], "did not answer" in e["error"]) for e in logs] == [
        ("recorder.storage_failed", True)]
    assert (recorder.journaled, recorder.clicks_journaled, recorder.written,
            recorder.pending, recorder.clicks_taken) == (100, 60, 0, 0, 60)
    assert not recorder.storage_ok and recorder.durable
    await _replayed_after_the_outage(recorder, blocker)
    assert _stored(store) == [("m1", 30, 20), ("m2", 30, 20)]
    await store.close()


class _Writer:
    """The writer process's side of the recorder (gateway/writer.py): it is handed where
    the rows are in the click log, and reads them from the segment files itself."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.ranges: list[tuple[str, int, int]] = []

    async def record(self, clicks: list[Click], events: list[Event]) -> None:
        await self.store.record(clicks, events)

    async def record_log(self, ranges: list[tuple[str, int, int]]) -> None:
        from gateway.clicklog import read_range

        for log_range in ranges:
            self.ranges.append(log_range)
            await self.store.record(*read_range(log_range))


async def test_a_writer_reads_the_log_ranges_it_is_handed(tmp_path: Path) -> None:
    store = await _two_merchants(tmp_path)
    writer = _Writer(store)
    recorder = Recorder(writer, Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                        queue_size=1000, flush_interval=60, batch_size=100, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog"))
    _mixed(recorder, 5, 3)
    await recorder.flush()
    assert len(writer.ranges) == 1
    assert _stored(store) == [("m1", 3, 2), ("m2", 2, 1)]
    assert (recorder.written, recorder.clicks_written, recorder.journaled) == (8, 5, 0)
    await recorder.close()
    await store.close()


async def test_when_memory_and_the_journal_are_full_what_is_held_dropped_and_logged(
        tmp_path: Path) -> None:
    # No click log, storage locked, the journal unwritable: the queue (2) and then memory
    # up to hold_size (4) keep rows, and the rest are dropped, each counted, the loss
    # logged at once and not again within 10 s; the journal's failure logged once with
    # what it says. Mended, the journal takes the next overflow and rows are durable again.
    store, recorder, blocker = await _nowhere_to_put(tmp_path, queue_size=2, batch_size=100,
                                                     hold_size=4)
    journal = tmp_path / "journal"
    with structlog.testing.capture_logs() as logs:
        for n in range(2):  # clicks and events alike fill memory
            recorder.click(_row(n, ("m1", "m2")[n]))
            recorder.event(_opened(n, ("m2", "m1")[n]))
        recorder.event(_opened(2, "m2"))  # memory is full: dropped, and counted
        recorder.click(_row(2, "m1"))
        recorder.click(_row(3, "m1"))
    assert (recorder.pending, recorder.dropped, recorder.clicks_dropped,
            recorder.clicks_taken, recorder.overflowed) == (4, 3, 2, 4, 0)
    assert not recorder.journal_ok and recorder.storage_ok  # not tried yet
    errors = [(e["event"], e.get("reason"), e.get("rows"), e.get("dropped"), e.get("held"),
               e["hold_size"]) for e in logs if e["log_level"] == "error"]
    assert errors == [("recorder.journal_failed", None, None, None, 2, 4),
                      ("recorder.clicks_dropped", "memory_full", 1, 1, None, 4)]
    (failed,) = [e for e in logs if e["event"] == "recorder.journal_failed"]
    assert failed["error"] and failed["error"] != "None"
    journal.unlink()  # the disk is back: the next row past the queue is journaled
    with structlog.testing.capture_logs() as logs:
        recorder.click(_row(4, "m2"))
        recorder.event(_opened(4, "m2"))
    assert recorder.journal_ok and recorder.durable
    assert (recorder.overflowed, recorder.clicks_journaled, recorder.clicks_taken,
            recorder.pending) == (2, 1, 5, 4)
    assert [(e["event"], e["queue_size"], e["overflowed"]) for e in logs
            if e["log_level"] == "warning"] == [("recorder.queue_full", 2, 1)]
    await _replayed_after_the_outage(recorder, blocker)
    assert _stored(store) == [("m1", 1, 1), ("m2", 2, 2)]
    await store.close()


async def test_events_in_memory_count_against_the_queue(tmp_path: Path) -> None:
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=4,
                        flush_interval=60, batch_size=100, retry_max=0.1)
    _mixed(recorder, 2, 3)  # 5 rows, room for 4: the last event goes to the journal
    assert (recorder.pending, recorder.overflowed, recorder.clicks_journaled) == (4, 1, 0)
    recorder.start()
    await until(lambda: not recorder.journal.has_rows(), what="the journal replayed")
    await recorder.close()
    assert _stored(store) == [("m1", 1, 2), ("m2", 1, 1)]
    await store.close()


async def test_journal_lines_of_every_version_are_read_and_torn_ones_counted(
        tmp_path: Path) -> None:
    # Lines written before "row" said "kind": "click" for a click, and an event's own kind
    # for an event. All are replayed; a torn line is skipped and counted in the log.
    journal = Journal(tmp_path / "data" / "journal")  # made however deep, on first use
    journal.append([_row(1, "m1"), _opened(1, "m2")])
    old_click = {"kind": "click", **_row(2, "m2")._asdict()}
    old_event = _opened(2, "m1")._asdict()  # its "kind" is storefront_open
    with open(journal.pending, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(old_click) + "\n" + json.dumps(old_event) + "\n")
    clicks, events, bad = Journal.read(journal.pending)
    assert (clicks, events, bad) == ([_row(1, "m1"), _row(2, "m2")],
                                     [_opened(1, "m2"), _opened(2, "m1")], 0)
    with open(journal.pending, "a", encoding="utf-8") as fh:  # a field no Click has, and
        fh.write(json.dumps({"row": "click", **_row(3, "m1")._asdict(), "extra": 1})
                 + '\n{"row": "click", "id": "m1c0\n')  # a torn last line
    assert Journal.read(journal.pending)[2] == 2
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, journal, queue_size=100, flush_interval=0.02, batch_size=100,
                        retry_max=0.1)
    with structlog.testing.capture_logs() as logs:
        recorder.start()
        await until(lambda: not journal.has_rows(), what="the journal replayed")
        await recorder.close()
    assert [e["lines"] for e in logs if e["event"] == "recorder.journal_unreadable_lines"] == [2]
    assert _stored(store) == [("m1", 1, 1), ("m2", 1, 1)]
    await store.close()


def test_rows_appended_after_a_torn_journal_line_start_on_a_line_of_their_own(
        tmp_path: Path) -> None:
    # A process killed mid-append leaves a line cut short; the next rows appended to the
    # file (the next start moves a dead process's click log there) went on the same line,
    # so the first of them was unreadable: a click lost though journaled.
    journal = Journal(tmp_path / "journal")
    journal.append([_row(1, "m1")])
    with open(journal.pending, "a", encoding="utf-8") as fh:
        fh.write('{"row": "click", "id": "m2c0')  # torn, no line break
    journal.append([_row(2, "m2"), _row(3, "m1")])
    clicks, events, bad = Journal.read(journal.pending)
    assert (clicks, events, bad) == ([_row(1, "m1"), _row(2, "m2"), _row(3, "m1")], [], 1)


def test_a_journal_claims_its_own_work_again_and_skips_what_is_not_due(tmp_path: Path) -> None:
    # serve --workers: this process (w0) claims its own rows, again and again while storage
    # is away (each claim a new work file, the earlier ones kept), and a dead worker's;
    # never an empty file, and never a live worker's, whatever the files' order.
    import os

    directory = tmp_path / "journal"
    mine = Journal(directory, owner="w0")
    mine.pending.parent.mkdir(parents=True)
    mine.pending.touch()  # made, never written (the disk filled): nothing to claim
    assert not mine.has_rows()
    live = Journal(directory, owner="w1")
    live.append([_row(1, "m1")])
    dead = Journal(directory, owner="w3")
    dead.append([_row(2, "m2")])
    old = os.stat(dead.pending).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(dead.pending, (old, old))
    (first,) = mine.claim()  # the dead worker's, after the empty and the live one
    assert first.name.startswith(f"work-{os.getpid()}-") and Journal.read(first)[0] == [
        _row(2, "m2")]
    mine.append([_row(3, "m1")])
    second = mine.claim()
    assert first in second and len(second) == 2
    assert mine.claim() == sorted(second)  # its own work files, every one of them
    assert live.pending.exists() and Journal.read(live.pending)[0] == [_row(1, "m1")]


def test_rows_another_live_worker_has_claimed_are_left_to_it(tmp_path: Path) -> None:
    # serve --workers: w1 takes a dead worker's old rows over and replays them; w0, looking
    # for orphans meanwhile, must not take them from w1 (both would store them).
    import os
    import subprocess
    import sys

    directory = tmp_path / "journal"
    dead = Journal(directory, owner="w3")
    dead.append([_row(1, "m1"), _row(2, "m2")])
    old = os.stat(dead.pending).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(dead.pending, (old, old))
    w1 = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from gateway.recorder import Journal; "
         "print(len(Journal(Path(sys.argv[1]), owner='w1').claim()), flush=True); "
         "time.sleep(600)", str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert w1.stdout is not None and w1.stdout.readline() == "1\n"
        assert Journal(directory, owner="w0").claim() == []
        (work,) = directory.glob(f"work-{w1.pid}-*")
        assert Journal.read(work)[0] == [_row(1, "m1"), _row(2, "m2")]
    finally:
        w1.kill()
        w1.wait()


async def test_outages_are_logged_once_each_way_with_what_failed(tmp_path: Path) -> None:
    # Storage and the journal each say when they fail (with the error, and for storage
    # when it is tried again) and when they are back: once per outage, however many
    # batches meet it. Every batch meanwhile is counted where it went.
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=100,
                        flush_interval=60, batch_size=100, retry_max=10)
    with structlog.testing.capture_logs() as logs:
        for outage in range(2):
            blocker = _lock(tmp_path)
            for n in range(2):
                recorder.click(_row(10 * outage + n, "m1"))
                await recorder.flush()  # storage locked: journaled
            blocker.execute("ROLLBACK")
            blocker.close()
            recorder.click(_row(10 * outage + 5, "m2"))
            await recorder.flush()  # stored: storage is back
        (tmp_path / "journal").rename(tmp_path / "journal.away")  # its rows kept aside
        journal = _break_journal(tmp_path)
        blocker = _lock(tmp_path)
        recorder.click(_row(30, "m1"))
        await recorder.flush()  # neither: held
        journal.unlink()
        (tmp_path / "journal.away").rename(tmp_path / "journal")
        await recorder.flush()  # the journal takes it
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (recorder.clicks_journaled, recorder.journaled, recorder.clicks_written,
            recorder.pending) == (5, 5, 2, 0)
    said = [(e["event"], e.get("retry_in")) for e in logs]
    assert said == [("recorder.storage_failed", 0.5), ("recorder.storage_back", None)] * 2 + [
        ("recorder.storage_failed", 0.5), ("recorder.journal_failed", None),
        ("recorder.journal_back", None)]
    errors = [e["error"] for e in logs if "error" in e]
    assert len(errors) == 4 and all("did not answer" in e for e in errors[:3]), errors
    assert errors[3] and errors[3] != "None"
    await recorder.close()
    await store.close()


async def test_a_loss_at_shutdown_is_logged_even_just_after_another(tmp_path: Path) -> None:
    # Drops in memory are logged at most every 10 s; the loss at shutdown always is.
    store, recorder, blocker = await _nowhere_to_put(tmp_path, queue_size=1, batch_size=100,
                                                     hold_size=1)
    with structlog.testing.capture_logs() as logs:
        recorder.click(_row(1, "m1"))
        recorder.click(_row(2, "m2"))  # memory full: dropped
        await recorder.close()  # storage and journal still failing: the first is lost too
    blocker.execute("ROLLBACK")
    blocker.close()
    assert [(e["reason"], e["rows"], e["dropped"]) for e in logs
            if e["event"] == "recorder.clicks_dropped"] == [("memory_full", 1, 1),
                                                            ("closing", 1, 2)]
    assert (recorder.dropped, recorder.clicks_dropped) == (2, 2)
    await store.close()


async def test_a_failure_without_words_is_logged_by_its_kind(tmp_path: Path) -> None:
    # The writer process's call limit raises a bare TimeoutError: the log names it.
    class _Stuck:
        async def record(self, clicks: list[Click], events: list[Event]) -> None:
            raise TimeoutError

    recorder = Recorder(_Stuck(), Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                        queue_size=100, flush_interval=60, batch_size=100, retry_max=0.1)
    recorder.click(_row(1, "m1"))
    with structlog.testing.capture_logs() as logs:
        await recorder.flush()
    assert [(e["event"], e["error"]) for e in logs] == [
        ("recorder.storage_failed", "TimeoutError")]
    assert (recorder.journaled, recorder.storage_ok) == (1, False)


async def test_the_click_log_keeps_its_rows_while_storage_and_journal_fail(
        tmp_path: Path) -> None:
    # Neither storage nor the journal takes them: the rows stay in the click log, pending
    # (not durable meanwhile), until the journal is back and takes them all.
    store, recorder, blocker = await _nowhere_to_put(
        tmp_path, queue_size=1000, batch_size=100, clicklog=ClickLog(tmp_path / "clicklog"))
    journal = tmp_path / "journal"
    _mixed(recorder, 3, 2)
    await recorder.flush()
    assert (recorder.pending, recorder.journaled, recorder.durable) == (5, 0, False)
    journal.unlink()
    await recorder.flush()
    assert (recorder.pending, recorder.journaled, recorder.clicks_journaled,
            recorder.durable) == (0, 5, 3, True)
    await _replayed_after_the_outage(recorder, blocker)
    assert _stored(store) == [("m1", 2, 1), ("m2", 1, 1)]
    await store.close()


async def test_a_killed_gateways_click_log_is_stored_by_the_next_start(tmp_path: Path) -> None:
    # Two gateways were killed with rows in their click logs (w1: clicks and events of both
    # merchants; w2: one click only). The next start moves them to the journal, durably,
    # removes their segments and stores them; while the journal fails, the segments stay.
    store = await _two_merchants(tmp_path)
    directory = tmp_path / "clicklog"
    killed = ClickLog(directory, owner="w1")
    for n in range(3):
        killed.append(_row(n, ("m1", "m2")[n % 2]))
        killed.append(_opened(n, ("m2", "m1")[n % 2]))
    killed.close(done=False)  # what the kernel leaves of a killed process's log
    other = ClickLog(directory, owner="w2")
    other.append(_row(9, "m2"))
    other.close(done=False)
    segments = sorted(p.name for p in directory.glob("*.log"))
    assert len(segments) == 2

    journal = _break_journal(tmp_path)
    broken = Recorder(store, Journal(journal), queue_size=100, flush_interval=60,
                      batch_size=100, retry_max=0.1, clicklog=ClickLog(directory))
    with structlog.testing.capture_logs() as logs:
        broken.start()
        await until(lambda: not broken.journal_ok, what="the journal failing")
        await broken.close()
    (failed,) = [e for e in logs if e["event"] == "recorder.journal_failed"]
    assert failed["error"] and failed["error"] != "None"
    assert not [e for e in logs if e["event"] == "recorder.clicklog_recovered"]
    assert sorted(p.name for p in directory.glob("*.log")) == segments  # kept for next time

    journal.unlink()
    recorder = Recorder(store, Journal(journal), queue_size=100, flush_interval=60,
                        batch_size=100, retry_max=0.1, clicklog=ClickLog(directory))
    with structlog.testing.capture_logs() as logs:
        recorder.start()
        await until(lambda: _stored(store) == [("m1", 2, 1), ("m2", 2, 2)],
                    what="the killed gateways' rows stored")
        await recorder.close()
    assert not list(directory.glob("*.log")) and not recorder.journal.has_rows()
    assert sorted((e["file"], e["clicks"], e["events"]) for e in logs
                  if e["event"] == "recorder.clicklog_recovered") == [
        (segments[0], 3, 3), (segments[1], 1, 0)]
    await store.close()


class _Away:
    """Storage that refuses every write while ``away`` (as an unreachable database does),
    and otherwise stores; it keeps each stored batch's (clicks, events) sizes."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.away = False
        self.batches: list[tuple[int, int]] = []

    async def record(self, clicks: list[Click], events: list[Event]) -> None:
        if self.away:
            raise StoreUnavailable("the database did not answer")
        await self.store.record(clicks, events)
        self.batches.append((len(clicks), len(events)))


async def test_a_replay_after_an_outage_probes_with_the_files_first_lines_then_batches(
        tmp_path: Path) -> None:
    # The journal holds a dead worker's file of torn lines only, and this worker's rows:
    # 2 clicks, 8 events, 10 clicks, then a click journaled in the outage. With storage
    # away, a replay tries it with a file's first batch of lines (here the 2 clicks and 8
    # events) before parsing the rest, which follows a batch at a time. A file whose
    # first lines are all torn writes nothing, and does not stop the replay.
    store = await _two_merchants(tmp_path)
    sink = _Away(store)
    journal = Journal(tmp_path / "journal")
    dead = Journal(tmp_path / "journal", owner="a")  # sorts before w0
    dead.pending.parent.mkdir(parents=True)
    dead.pending.write_text('{"row": "click", "id": "m1c0\n{"row": "event", "id"\n')
    old = os.stat(dead.pending).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(dead.pending, (old, old))
    journal.append([_row(n, ("m1", "m2")[n % 2]) for n in range(2)]
                   + [_opened(n, ("m2", "m1")[n % 2]) for n in range(8)]
                   + [_row(n, ("m1", "m2")[n % 2]) for n in range(2, 12)])
    recorder = Recorder(sink, journal, queue_size=100,  # type: ignore[arg-type]
                        flush_interval=0.02, batch_size=10, retry_max=0.1)
    sink.away = True
    recorder.click(_row(12, "m1"))
    await recorder.flush()  # storage away: journaled
    assert not recorder.storage_ok and recorder.journaled == 1
    sink.away = False
    with structlog.testing.capture_logs() as logs:
        recorder.start()
        await until(lambda: not journal.has_rows(), what="the journal replayed")
        await recorder.close()
    assert sink.batches == [(2, 8), (10, 0), (1, 0)]
    assert _stored(store) == [("m1", 7, 4), ("m2", 6, 4)]
    assert [(e["event"], e["file"].split("-", 3)[3], e.get("lines"), e.get("clicks"),
             e.get("events")) for e in logs if "file" in e] == [
        ("recorder.journal_unreadable_lines", "pending-a.jsonl", 2, None, None),
        ("recorder.journal_replayed", "pending-a.jsonl", None, 0, 0),
        ("recorder.journal_replayed", "pending-w0.jsonl", None, 13, 8)]
    await store.close()


async def test_while_the_click_log_fails_rows_wait_in_memory_and_it_is_tried_again(
        tmp_path: Path) -> None:
    # The click log's directory cannot be made (a file is in its place): rows go to memory
    # and are stored from there; the failure is logged once, with its error, not per row.
    # Once the disk is mended, the log takes rows again (tried again after a while), says
    # so once.
    store = await _two_merchants(tmp_path)
    directory = tmp_path / "clicklog"
    directory.write_text("a file where the click log's directory should be")
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=1000,
                        flush_interval=60, batch_size=1000, retry_max=0.1,
                        clicklog=ClickLog(directory))
    with structlog.testing.capture_logs() as logs:
        recorder.click(_row(0, "m1"))
        recorder.event(_opened(0, "m2"))
        recorder.click(_row(1, "m2"))
        assert recorder.pending == 3 and recorder.clicks_taken == 2
        await recorder.flush()
        assert _stored(store) == [("m1", 1, 0), ("m2", 1, 1)]
        directory.unlink()
        made = iter(range(2, 10_000))

        def logged() -> bool:
            n = next(made)
            recorder.click(_row(n, ("m1", "m2")[n % 2]))
            return directory.is_dir() and any(directory.glob("*.log"))

        await until(logged, what="the click log taking rows again")
        last = next(made)
        recorder.click(_row(last, "m1"))
        await recorder.flush()
    assert [(e["event"], e.get("error")) for e in logs] == [
        ("recorder.clicklog_failed", logs[0].get("error")), ("recorder.clicklog_back", None)]
    assert logs[0]["error"] and logs[0]["error"] != "None"
    assert (recorder.pending, recorder.clicks_written, recorder.written) == (
        0, last + 1, last + 2)
    assert sum(clicks for _, clicks, _ in _stored(store)) == last + 1
    await recorder.close()
    await store.close()


async def test_rows_held_in_memory_at_shutdown_are_counted_lost_by_kind(tmp_path: Path) -> None:
    # Storage and the journal both fail. Memory holds the queue (2) and, past it, up to
    # twice the queue (the default hold size): 1 click and 3 events; 2 clicks past that
    # are dropped. Shutdown tries them once more (a batch of 2 fails, the rest keep their
    # place), then counts all 4 lost: every click handed over is accounted for.
    store, recorder, blocker = await _nowhere_to_put(tmp_path, queue_size=2, batch_size=2)
    with structlog.testing.capture_logs() as logs:
        recorder.event(_opened(0, "m1"))
        recorder.click(_row(0, "m2"))
        recorder.event(_opened(1, "m2"))
        recorder.event(_opened(2, "m1"))
        recorder.click(_row(1, "m1"))  # memory full: dropped
        recorder.click(_row(2, "m2"))
        assert (recorder.pending, recorder.dropped, recorder.clicks_taken) == (4, 2, 3)
        await recorder.close()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert (recorder.pending, recorder.dropped, recorder.clicks_dropped,
            recorder.clicks_taken) == (0, 6, 3, 3)
    assert [(e["event"], e.get("reason"), e.get("rows")) for e in logs
            if e["event"] == "recorder.clicks_dropped"] == [
        ("recorder.clicks_dropped", "memory_full", 1), ("recorder.clicks_dropped", "closing", 4)]
    (closed,) = [e for e in logs if e["event"] == "recorder.closed"]
    assert [closed.get(k) for k in ("written", "journaled", "overflowed", "dropped")] == [
        0, 0, 0, 6]
    assert _stored(store) == [("m1", 0, 0), ("m2", 0, 0)]
    await store.close()


async def test_rows_the_click_log_keeps_at_shutdown_are_stored_at_the_next_start(
        tmp_path: Path) -> None:
    # Shutdown with storage and the journal failing: the rows stay in the click log's
    # segments (logged as left there, not lost), and the next start stores them.
    store, recorder, blocker = await _nowhere_to_put(
        tmp_path, queue_size=1000, batch_size=100, clicklog=ClickLog(tmp_path / "clicklog"))
    journal = tmp_path / "journal"
    _mixed(recorder, 3, 2)
    with structlog.testing.capture_logs() as logs:
        await recorder.close()
    assert [(e["event"], e.get("rows")) for e in logs if e["log_level"] == "warning"] == [
        ("recorder.storage_failed", None), ("recorder.left_in_clicklog", 5)]
    (closed,) = [e for e in logs if e["event"] == "recorder.closed"]
    assert (closed["dropped"], recorder.dropped, recorder.pending) == (0, 0, 5)
    assert list((tmp_path / "clicklog").glob("*.log"))
    blocker.execute("ROLLBACK")
    blocker.close()
    journal.unlink()
    again = Recorder(store, Journal(journal), queue_size=1000, flush_interval=0.02,
                     batch_size=100, retry_max=0.1, clicklog=ClickLog(tmp_path / "clicklog"))
    again.start()
    await until(lambda: _stored(store) == [("m1", 2, 1), ("m2", 1, 1)],
                what="the rows left in the click log stored")
    await again.close()
    assert not list((tmp_path / "clicklog").glob("*.log"))
    await store.close()


async def test_in_an_outage_new_clicks_probe_storage_and_the_replay_waits_for_them(
        tmp_path: Path) -> None:
    # While clicks keep coming in an outage, each batch of new clicks probes storage and
    # the journal stays put (a replay would be a second try of a struggling database per
    # round). Once the clicks stop (a quiet night), the replay probes storage itself, and
    # when storage is back, the journal is stored.
    store = await _two_merchants(tmp_path)
    sink = _Away(store)
    tried: list[str] = []  # the click ids of every try, failed or not

    async def record(clicks: list[Click], events: list[Event]) -> None:
        tried.extend(c.id for c in clicks)
        await _Away.record(sink, clicks, events)

    sink.record = record  # type: ignore[method-assign]
    sink.away = True
    # A batch is one row, and the timer is an hour off: a round runs when a click comes.
    recorder = Recorder(sink, Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                        queue_size=100, flush_interval=3600, batch_size=1, retry_max=0.05)
    recorder.start()
    for n in range(5):
        recorder.click(_row(n, ("m1", "m2")[n % 2]))
        await until(lambda n=n: recorder.journaled == n + 1, what="the click journaled")
    assert tried == [_row(n, ("m1", "m2")[n % 2]).id for n in range(5)]  # each tried once
    recorder.flush_interval = 0.02  # the night: rounds on the timer, no clicks
    recorder.click(_row(5, "m2"))  # wakes the task, now on the short timer
    await until(lambda: len(tried) > len(set(tried)), what="the replay probing storage alone")
    sink.away = False
    await until(lambda: not recorder.journal.has_rows() and not recorder.pending,
                what="the journal stored")
    await recorder.close()
    assert _stored(store) == [("m1", 3, 0), ("m2", 3, 0)]
    await store.close()


async def test_a_batch_filled_by_a_click_after_events_is_written_at_once(tmp_path: Path) -> None:
    # In the click log a batch counts rows of both kinds: 3 events and then a click fill
    # a batch of 4, which goes out at once (the timer is a minute off).
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=1000,
                        flush_interval=60, batch_size=4, retry_max=0.1,
                        clicklog=ClickLog(tmp_path / "clicklog"))
    recorder.start()
    for n in range(3):
        recorder.event(_opened(n, ("m1", "m2")[n % 2]))
    recorder.click(_row(0, "m2"))
    await until(lambda: recorder.written == 4, what="the full batch written")
    assert _stored(store) == [("m1", 0, 2), ("m2", 1, 1)]
    await recorder.close()
    await store.close()


async def test_a_flush_writes_every_batch_held_in_memory(tmp_path: Path) -> None:
    # Without a click log, 5 clicks and 3 events wait in memory in batches of 2: one
    # flush stores them all, and the counters add up every batch.
    store = await _two_merchants(tmp_path)
    recorder = Recorder(store, Journal(tmp_path / "journal"), queue_size=1000,
                        flush_interval=60, batch_size=2, retry_max=0.1)
    _mixed(recorder, 5, 3)
    await recorder.flush()
    assert (recorder.pending, recorder.written, recorder.clicks_written,
            recorder.clicks_taken) == (0, 8, 5, 5)
    assert _stored(store) == [("m1", 3, 2), ("m2", 2, 1)]
    await recorder.close()
    await store.close()


async def test_a_journal_line_that_is_not_utf8_is_counted_and_the_rest_replayed(
        tmp_path: Path) -> None:
    # What an unsynced tail holds after a power cut is anything, not always text: such a
    # line is unreadable like a torn one, and must not keep the file's other rows (or the
    # files after it) from storage.
    store = await _two_merchants(tmp_path)
    journal = Journal(tmp_path / "journal")
    journal.append([_row(1, "m1"), _opened(1, "m2")])
    with open(journal.pending, "ab") as fh:
        fh.write(b'{"row": "click", "id": "\xe5\xbe\n\xff\xfe\x00junk\n')
    journal.append([_row(2, "m2")])
    later = Journal(tmp_path / "journal", owner="w9")  # sorts after: replayed in the round
    later.append([_row(3, "m1")])
    old = os.stat(later.pending).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(later.pending, (old, old))
    recorder = Recorder(store, journal, queue_size=100, flush_interval=0.02, batch_size=100,
                        retry_max=0.1)
    with structlog.testing.capture_logs() as logs:
        recorder.start()
        await until(lambda: not journal.has_rows(), what="the journal replayed")
        await recorder.close()
    assert [e["lines"] for e in logs if e["event"] == "recorder.journal_unreadable_lines"] == [2]
    assert not [e for e in logs if e["log_level"] == "error"]
    assert _stored(store) == [("m1", 2, 0), ("m2", 1, 1)]
    await store.close()


async def test_a_journal_file_that_cannot_be_read_at_start_does_not_stop_the_recorder(
        tmp_path: Path) -> None:
    # A journal entry the replay cannot open (here a directory where a dead worker's file
    # was; as well a file another user owns): it is logged, and the clicks that come are
    # still stored. The recorder task is the only way out for them.
    store = await _two_merchants(tmp_path)
    journal = Journal(tmp_path / "journal")
    odd = tmp_path / "journal" / "pending-a.jsonl"
    odd.mkdir(parents=True)
    old = os.stat(odd).st_mtime - Journal.ORPHAN_AFTER - 1
    os.utime(odd, (old, old))
    recorder = Recorder(store, journal, queue_size=100, flush_interval=0.02, batch_size=100,
                        retry_max=0.1)
    with structlog.testing.capture_logs() as logs:
        recorder.start()
        recorder.click(_row(1, "m1"))
        recorder.event(_opened(1, "m2"))
        await until(lambda: _stored(store) == [("m1", 1, 0), ("m2", 0, 1)],
                    what="new rows stored")
        await recorder.close()
    # At the start and in the round that stored the rows (its replay fails again).
    assert {e["event"] for e in logs if e["log_level"] == "error"} == {
        "recorder.unexpected_error"}
    await store.close()
