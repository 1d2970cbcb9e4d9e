"""Clicks and events leave the hot path through here, and none of them is ever lost.

The request handler appends to an in-memory batch and returns; a background task writes the
batch to storage at most ``flush_interval`` later (sooner when a batch fills). When storage
fails, the batch goes to an append-only journal on disk at once and the task retries the
journal with backoff until storage is back. When memory is full, the click goes straight to
the journal. On shutdown everything pending is written, or journaled if storage is away;
the journal is replayed when the gateway next starts. Storage skips ids it already holds,
so a replay after an unclear failure never counts twice.

When the journal fails too (disk full, its directory gone), rows stay in memory, up to
``hold_size`` of them, and are written or journaled as soon as either works again; the
recorder is not ``durable`` meanwhile (``/readyz`` answers not-ready). Only a row that finds
storage, the journal and memory all full or failing is dropped, and it is counted
(``dropped``, shown by ``/readyz``) and logged (``recorder.clicks_dropped``): never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from .clicklog import ClickLog, LogPosition, LogRange
from .store import Click, Event

__all__ = ["Journal", "LogSink", "Recorder", "RowSink", "record_in_batches"]

log = structlog.get_logger("linkloop.recorder")

Row = Click | Event


#: What ``Journal.probe`` writes: a page, so that a full disk must find room for it.
_PROBE_BYTES = 4096
#: How often a failed journal is probed while storage takes the clicks (nothing else tries
#: the journal then, and /readyz would say "failing" long after the disk had room again).
_PROBE_EVERY = 5.0


class Journal:
    """Append-only JSON lines of rows storage has not confirmed yet.

    Several gateway processes may share one data directory (``serve --workers``), so each
    appends to its own ``pending-<owner>.jsonl`` and a file is replayed only by whoever
    renamed it into a ``work-<pid>-...`` name first: a rename is atomic, so no file is
    replayed by two processes at once. Files left by a process that died (its pending file
    or its claimed work untouched for a minute) are taken over by the next replay.
    """

    #: A file nobody has written for this long is an orphan: its owner stopped.
    ORPHAN_AFTER = 60.0

    def __init__(self, directory: Path, owner: str = "w0") -> None:
        self.directory = directory
        self.owner = owner
        self.pending = directory / f"pending-{owner}.jsonl"
        self._lock = threading.Lock()

    def append(self, rows: list[Row], *, sync: bool = True) -> None:
        """Append rows; with ``sync`` they also survive a power cut (blocking: off the loop)."""
        # "row", not "kind": an event's own fields have a "kind" (storefront_open, add...).
        lines = "".join(
            json.dumps({"row": "click" if isinstance(r, Click) else "event", **r._asdict()},
                       ensure_ascii=False) + "\n"
            for r in rows).encode("utf-8")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.pending, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                _append_lines(fd, lines, sync=sync)
            finally:
                os.close(fd)

    def probe(self) -> None:
        """Write and remove a page-sized file beside the journal: OSError while its
        directory or disk still fails (a full disk refuses a new page; an empty append or
        a mere open would pass there)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f"probe-{self.owner}.tmp"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _append_lines(fd, bytes(_PROBE_BYTES), sync=True)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)

    def has_rows(self) -> bool:
        if not self.directory.exists():
            return False
        return any(p.stat().st_size or p.name.startswith("work-")
                   for p in self.directory.glob("*.jsonl"))

    def claim(self) -> list[Path]:
        """Take the rows this process may replay now; new spills start a fresh file."""
        if not self.directory.exists():
            return []
        mine = f"work-{os.getpid()}-"
        stale = time.time() - self.ORPHAN_AFTER
        claimed = []
        with self._lock:
            for path in sorted(self.directory.glob("*.jsonl")):
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue  # another process took it a moment ago
                ours = path == self.pending or path.name.startswith(mine)
                if not ours and info.st_mtime > stale:
                    continue  # a live process's file: leave it to its owner
                if path.name.startswith(mine):
                    if _touched(path):  # still being replayed: not an orphan for a while
                        claimed.append(path)
                    continue
                if path.name.startswith("pending-") and not info.st_size:
                    continue
                target = self.directory / f"{mine}{time.time_ns()}-{path.name}"
                try:
                    path.rename(target)
                except FileNotFoundError:
                    continue
                # A rename keeps the file's time: a dead worker's old rows, just claimed,
                # would look orphaned to the other workers, and be replayed twice.
                if _touched(target):
                    claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path, limit: int | None = None,
             ) -> tuple[list[Click], list[Event], int]:
        """The rows of one journal file (the first ``limit`` lines only, if given), and how
        many lines were unreadable (a torn write)."""
        clicks: list[Click] = []
        events: list[Event] = []
        bad = 0
        # Bytes, decoded line by line: a torn or garbled tail need not be UTF-8, and it is
        # one unreadable line, not a file (and a recorder task) that fails to read.
        with open(path, "rb") as fh:
            for number, line in enumerate(fh):
                if number == limit:
                    break
                try:
                    data = json.loads(line.decode("utf-8"))
                    # Lines written before "row" said "kind": "click", or an event's own
                    # kind (which had overwritten "kind": "event").
                    row = data.pop("row") if "row" in data else (
                        data.pop("kind") if data.get("kind") == "click" else "event")
                    if row == "click":
                        clicks.append(Click(**data))
                    else:
                        events.append(Event(**data))
                except (ValueError, TypeError, KeyError):
                    bad += 1
        return clicks, events, bad


def _append_lines(fd: int, lines: bytes, *, sync: bool) -> None:
    """Whole lines at the end of a journal file, or, on an error, nothing.

    A full disk takes part of a write: the rows, kept in memory, are appended again later,
    and the first of them, glued to the torn part, was one unreadable line, a click lost
    though journaled. So a failed append is cut off again, and a tail torn some other way
    (a process killed mid-write) gets a line break before the next rows.
    """
    start = os.fstat(fd).st_size
    if start and os.pread(fd, 1, start - 1) != b"\n":
        lines = b"\n" + lines
    try:
        left = memoryview(lines)
        while left:
            left = left[os.write(fd, left):]
        if sync:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _touched(path: Path) -> bool:
    """Set the file's time to now; False if another process took it a moment ago."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


class RowSink(Protocol):
    """Where batches go: a ``Store``, or the writer process in front of one."""

    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None: ...


@runtime_checkable
class LogSink(Protocol):
    """A sink that reads a batch from the click log itself (the writer process): the event
    loop sends where the rows are, never the rows."""

    async def record_log(self, ranges: Sequence[LogRange]) -> None: ...


async def record_in_batches(sink: RowSink, clicks: Sequence[Click], events: Sequence[Event],
                            size: int) -> None:
    """Rows (a batch's ranges of the click log, or a journal file's) in batches of ``size``."""
    for start in range(0, max(len(clicks), len(events)), size):
        await sink.record(clicks[start:start + size], events[start:start + size])


class Recorder:
    def __init__(
        self, sink: RowSink, journal: Journal, *, queue_size: int, flush_interval: float,
        batch_size: int, retry_max: float, hold_size: int | None = None,
        clicklog: ClickLog | None = None,
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.clicklog = clicklog
        self.queue_size = queue_size
        #: Most rows kept in memory while the journal fails too (at least the queue's).
        self.hold_size = max(queue_size, 2 * queue_size if hold_size is None else hold_size)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.retry_max = retry_max
        # The click log's rows not yet stored or journaled: from _log_from on, the oldest
        # made at _log_oldest. They are cut into generations of at most batch_size rows,
        # each written (or journaled) whole: _cuts holds each full generation's end and
        # counts, oldest first; the rows after the last cut are the open one's
        # (_open_clicks, _open_events). Their sums are the log's (``_log_rows``).
        self._log_from = clicklog.position() if clicklog is not None else None
        self._log_oldest: float | None = None
        self._cuts: deque[tuple[LogPosition, int, int]] = deque()
        self._open_clicks = 0
        self._open_events = 0
        self._log_failed_at: float | None = None
        # Rows the log could not take, held in memory.
        self._clicks: list[Click] = []
        self._events: list[Event] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Held while rows are taken and written: a flush() waits for one in flight.
        self._flushing = asyncio.Lock()
        self._closing = False
        self._retry_delay = 0.0
        self._overflow_logged_at = 0.0
        self._journal_probe_at = 0.0
        self._dropped_logged_at = 0.0
        #: Counters for /readyz and the logs.
        self.written = 0
        self.journaled = 0
        self.overflowed = 0
        #: Rows neither storage, the journal, the log nor memory could take: lost, counted.
        self.dropped = 0
        #: The same for clicks alone, for GET /metrics; counted per batch, never per click.
        self.clicks_written = 0
        self.clicks_journaled = 0
        self.clicks_dropped = 0
        #: Clicks that are stored, journaled or dropped, or in flight from memory: with the
        #: clicks still pending, all the clicks the share link handed over (``clicks_taken``).
        self._clicks_out = 0
        self.storage_ok = True
        self.journal_ok = True

    # --- the hot path's side -----------------------------------------------------------------
    def click(self, click: Click) -> None:
        """Take a click: into the click log, or memory when the log can't take it."""
        if self._logged(click):
            self._open_clicks += 1
            if self._open_clicks + self._open_events >= self.batch_size:
                self._cut()
            return
        self._hold(click, self._clicks)

    def event(self, event: Event) -> None:
        if self._logged(event):
            self._open_events += 1
            if self._open_clicks + self._open_events >= self.batch_size:
                self._cut()
            return
        self._hold(event, self._events)

    def _cut(self) -> None:
        """End a generation here, a full batch, and wake the writing task. A backlog is then
        stored a batch at a time: each shows in ``written`` and frees its log segments as
        it lands, and a failure journals one batch, not the whole backlog."""
        assert self.clicklog is not None
        self._cuts.append((self.clicklog.position(), self._open_clicks, self._open_events))
        self._open_clicks = self._open_events = 0
        self._wake.set()

    def _logged(self, row: Row) -> bool:
        """Append to the click log; False when there is none or it fails (tried again at
        most once a second, so a full disk costs no system call per click)."""
        clicklog = self.clicklog
        if clicklog is None:
            return False
        failed_at = self._log_failed_at
        if failed_at is not None and time.monotonic() - failed_at < 1.0:
            return False
        try:
            clicklog.append(row)
        except OSError as exc:
            if failed_at is None:
                log.error("recorder.clicklog_failed", error=str(exc))
            self._log_failed_at = time.monotonic()
            return False
        if failed_at is not None:
            log.info("recorder.clicklog_back")
            self._log_failed_at = None
        if self._log_oldest is None:
            self._log_oldest = row.ts
        return True

    def _hold(self, row: Row, held: list[Any]) -> None:
        """Keep a row the log could not take in memory, or the journal when memory is full."""
        if len(self._clicks) + len(self._events) >= self.queue_size:
            self._overflow(row, held)
            return
        held.append(row)
        if len(held) >= self.batch_size:
            self._wake.set()

    def _overflow(self, row: Row, held: list[Any]) -> None:
        """Memory is full (storage slow or away): the journal keeps the row, never the floor.

        When the journal fails too, memory holds the row after all (up to ``hold_size``), and
        past that it is dropped and counted. No fsync here: this runs on the loop; the page
        cache outlives the process.
        """
        click = isinstance(row, Click)
        try:
            self.journal.append([row], sync=False)
        except OSError as exc:
            self._journal_failed(exc)
            if len(self._clicks) + len(self._events) < self.hold_size:
                held.append(row)  # the next flush takes it, to storage or the journal
            else:
                self._drop(1, "memory_full")
                self.clicks_dropped += click
                self._clicks_out += click
            return
        self.journal_ok = True
        self.overflowed += 1
        self.clicks_journaled += click
        self._clicks_out += click
        now = time.monotonic()
        if now - self._overflow_logged_at > 10:
            self._overflow_logged_at = now
            log.warning("recorder.queue_full", queue_size=self.queue_size,
                        overflowed=self.overflowed)

    def _journal_failed(self, exc: OSError) -> None:
        if self.journal_ok:
            log.error("recorder.journal_failed", error=str(exc), held=self.pending,
                      hold_size=self.hold_size)
        self.journal_ok = False

    def _drop(self, rows: int, reason: str) -> None:
        """Count rows that are lost; say so at once, and again at most every 10 s."""
        self.dropped += rows
        now = time.monotonic()
        if reason == "closing" or now - self._dropped_logged_at > 10:
            self._dropped_logged_at = now
            log.error("recorder.clicks_dropped", reason=reason, rows=rows,
                      dropped=self.dropped, hold_size=self.hold_size)

    def _log_rows(self) -> tuple[int, int]:
        """(clicks, events) waiting in the click log: the cut generations' and the open one's."""
        return (self._open_clicks + sum(clicks for _, clicks, _ in self._cuts),
                self._open_events + sum(events for *_, events in self._cuts))

    @property
    def pending(self) -> int:
        """Rows taken and not yet stored, journaled or dropped."""
        return sum(self._log_rows()) + len(self._clicks) + len(self._events)

    @property
    def clicks_taken(self) -> int:
        """Every click the share link handed over: written, journaled, dropped or waiting."""
        return self._clicks_out + self._log_rows()[0] + len(self._clicks)

    @property
    def oldest_pending(self) -> float | None:
        """When the oldest row still pending was made (its click's or event's time)."""
        times = [rows[0].ts for rows in (self._clicks, self._events) if rows]
        if self._log_oldest is not None and any(self._log_rows()):
            times.append(self._log_oldest)
        return min(times) if times else None

    @property
    def durable(self) -> bool:
        """Whether rows accepted now can be made durable: storage or the journal takes them.
        False while both fail: rows wait in the log or memory (``/readyz`` not-ready)."""
        return self.storage_ok or self.journal_ok

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="linkloop-recorder")

    async def close(self) -> None:
        """Stop the background task, then write (or journal) everything still pending."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._flush()
        if self.clicklog is not None:
            left = sum(self._log_rows())
            if left:  # neither storage nor the journal: the next start takes them
                log.warning("recorder.left_in_clicklog", rows=left)
            self.clicklog.close(done=not left)
        held = len(self._clicks) + len(self._events)
        if held:  # in memory, and neither storage nor the journal: lost with the process
            self._drop(held, "closing")
            self.clicks_dropped += len(self._clicks)
            self._clicks_out += len(self._clicks)
            self._clicks.clear()
            self._events.clear()
        log.info("recorder.closed", written=self.written, journaled=self.journaled,
                 overflowed=self.overflowed, dropped=self.dropped)

    async def _pause(self) -> None:
        """Until the next flush: the flush interval, or a full batch; the backoff while
        storage fails. While the journal fails too, rows pile up and every click would fill
        a batch, so then only closing cuts the backoff short."""
        wake = self._wake if self.durable else self._stop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(),
                                   timeout=max(self.flush_interval, self._retry_delay))
        self._wake.clear()

    async def _run(self) -> None:
        try:  # what earlier processes left: a failure here must not end the task either
            await self._claim_orphans()
            await self._replay()
        except Exception:
            log.exception("recorder.unexpected_error")
        while not self._closing:
            await self._pause()
            try:
                probed = bool(self.pending)
                await self._flush()
                # While storage is away new clicks probe it, and the journal follows once
                # one is written. With none coming (a quiet night), the replay itself must
                # probe, or the journaled clicks would wait for the next shopper. (The
                # wait above backs off meanwhile; a replay reads its whole file.)
                if self.journal.has_rows() and (self.storage_ok or not probed):
                    await self._replay()
                await self._probe_journal()
            except Exception:  # never let the recorder die: it is the only way out
                log.exception("recorder.unexpected_error")

    async def flush(self) -> None:
        """Write what is pending now, and wait for a batch the task is writing (tests and
        shutdown): every click accepted before the call is then stored or journaled."""
        await self._flush()

    # --- writing -----------------------------------------------------------------------------
    async def _flush(self) -> None:
        async with self._flushing:
            await self._flush_log()
            await self._flush_memory()

    async def _flush_log(self) -> None:
        """Store the click log's rows a generation at a time (the oldest full batch, else
        everything the log holds when it starts), or journal them; when neither takes them,
        they wait there."""
        clicklog = self.clicklog
        while clicklog is not None and self._log_from is not None and any(self._log_rows()):
            if self._cuts:
                upto, clicks, events = self._cuts[0]
            else:
                upto, clicks, events = clicklog.position(), self._open_clicks, self._open_events
            ranges = clicklog.ranges(self._log_from, upto)
            if not (await self._write_log(ranges, clicks, events)
                    or await self._journal_log(ranges, clicks, events)):
                return
            clicklog.mark_done(upto)
            self._log_from = upto
            if self._cuts and self._cuts[0][0] == upto:
                self._cuts.popleft()
            elif self._cuts:  # cut while the open generation was written: it counted these too
                end, cut_clicks, cut_events = self._cuts[0]
                self._cuts[0] = (end, cut_clicks - clicks, cut_events - events)
            else:
                self._open_clicks -= clicks
                self._open_events -= events
            self._log_oldest = clicklog.time_at(upto) if any(self._log_rows()) else None

    async def _write_log(self, ranges: list[LogRange], clicks: int, events: int) -> bool:
        assert self.clicklog is not None
        try:
            if isinstance(self.sink, LogSink):  # the writer process reads them itself
                await self.sink.record_log(ranges)
            else:
                await record_in_batches(self.sink, *self.clicklog.rows_of(ranges),
                                        self.batch_size)
        except Exception as exc:
            self._storage_failed(exc)
            return False
        self._storage_back()
        self.written += clicks + events
        self.clicks_written += clicks
        self._clicks_out += clicks
        return True

    async def _journal_log(self, ranges: list[LogRange], clicks: int, events: int) -> bool:
        assert self.clicklog is not None
        log_clicks, log_events = self.clicklog.rows_of(ranges)
        if not await self._journal_rows([*log_clicks, *log_events]):
            return False
        self.clicks_journaled += clicks
        self._clicks_out += clicks
        return True

    async def _flush_memory(self) -> None:
        while self._clicks or self._events:
            clicks, self._clicks = self._clicks[: self.batch_size], self._clicks[self.batch_size :]
            events, self._events = self._events[: self.batch_size], self._events[self.batch_size :]
            self._clicks_out += len(clicks)
            if await self._write(clicks, events) or await self._journal(clicks, events):
                continue
            # Neither took them: back in memory, first in line (they are the oldest), until
            # the next try. New rows meanwhile stay within hold_size (see _overflow).
            self._clicks_out -= len(clicks)
            self._clicks[:0] = clicks
            self._events[:0] = events
            return

    async def _journal(self, clicks: list[Click], events: list[Event]) -> bool:
        if not await self._journal_rows([*clicks, *events]):
            return False
        self.clicks_journaled += len(clicks)
        return True

    async def _probe_journal(self) -> None:
        """While the journal is marked failing and storage takes every row, nothing else
        writes to the journal: probe it now and then, so that its state is today's."""
        now = time.monotonic()
        if self.journal_ok or not self.storage_ok or now < self._journal_probe_at:
            return
        self._journal_probe_at = now + _PROBE_EVERY
        try:
            await asyncio.to_thread(self.journal.probe)
        except OSError:
            return  # still failing: said when it began (recorder.journal_failed)
        log.info("recorder.journal_back")
        self.journal_ok = True

    async def _journal_rows(self, rows: list[Row]) -> bool:
        try:
            await asyncio.to_thread(self.journal.append, rows)
        except OSError as exc:
            self._journal_failed(exc)
            return False
        if not self.journal_ok:
            log.info("recorder.journal_back")
        self.journal_ok = True
        self.journaled += len(rows)
        return True

    async def _write(self, clicks: list[Click], events: list[Event]) -> bool:
        if not clicks and not events:
            return True  # nothing asked of storage: says nothing about it
        try:
            await self.sink.record(clicks, events)
        except Exception as exc:
            self._storage_failed(exc)
            return False
        self._storage_back()
        self.written += len(clicks) + len(events)
        self.clicks_written += len(clicks)
        return True

    def _storage_failed(self, exc: Exception) -> None:
        self._retry_delay = min(self.retry_max, max(0.5, self._retry_delay * 2))
        if self.storage_ok:
            log.warning("recorder.storage_failed", error=str(exc) or type(exc).__name__,
                        retry_in=self._retry_delay)
        self.storage_ok = False

    def _storage_back(self) -> None:
        if not self.storage_ok:
            log.info("recorder.storage_back")
        self.storage_ok = True
        self._retry_delay = 0.0

    async def _claim_orphans(self) -> None:
        """Move what killed processes left in their click logs to the journal, durably, and
        remove their segments: the journal's replay (next) stores it."""
        if self.clicklog is None:
            return
        orphans = self.clicklog.claim_orphans()
        while True:
            found = await asyncio.to_thread(next, orphans, None)
            if found is None:
                return
            path, clicks, events = found
            if clicks or events:
                try:
                    await asyncio.to_thread(self.journal.append, [*clicks, *events])
                except OSError as exc:
                    self._journal_failed(exc)
                    return  # the segment stays: the next start tries again
            path.unlink(missing_ok=True)
            log.info("recorder.clicklog_recovered", file=path.name, clicks=len(clicks),
                     events=len(events))

    async def _replay(self) -> None:
        """Write journaled rows to storage; a file is removed only once all of it is in."""
        for path in await asyncio.to_thread(self.journal.claim):
            done = (0, 0)
            if not self.storage_ok:
                # Storage was away: try it with the file's first rows before parsing all of
                # it (a long outage leaves a file that takes seconds of interpreter time).
                clicks, events, _ = await asyncio.to_thread(Journal.read, path, self.batch_size)
                if not await self._write(clicks, events):
                    return
                done = (len(clicks), len(events))
            clicks, events, bad = await asyncio.to_thread(Journal.read, path)
            total = (len(clicks), len(events))
            clicks, events = clicks[done[0]:], events[done[1]:]
            if bad:
                log.warning("recorder.journal_unreadable_lines", file=path.name, lines=bad)
            for start in range(0, max(len(clicks), len(events)), self.batch_size):
                end = start + self.batch_size
                if not await self._write(clicks[start:end], events[start:end]):
                    return  # storage still away: the file stays for the next try
            path.unlink(missing_ok=True)
            log.info("recorder.journal_replayed", file=path.name, clicks=total[0],
                     events=total[1])
