"""The click log: every row the recorder takes, in shared memory that outlives the process.

The recorder holds clicks and events in memory until the writer has stored them, up to
``recorder.flush_interval_ms`` later (recorder.py). A gateway process killed meanwhile
(``kill -9``, the OOM killer, a crash in C) would take those answered clicks with it. So
each row is also appended here: a memory-mapped file, where an append is a memory copy and
no system call, and whose pages the kernel keeps, and writes to disk, when the process dies.
The recorder marks how far its rows are stored or journaled (``done``); the next start
claims what a dead process left past its mark and hands it to the journal, which replays it
(storage skips ids it already holds, so a row stored just before the kill counts once).

What it does not cover: a power cut or kernel crash loses pages the kernel had not written
back yet, the rows of the last moments that were not stored yet either (README, "What a
crash loses").

A segment ``<owner>-<pid>-<n>.log`` is ``SEGMENT_BYTES`` long, its disk space allocated when
it is made. Sparse, a full disk met a row's first write to a fresh page, and the kernel
answers a write to a mapping it cannot back with SIGBUS, which killed the gateway: now a
full disk is an ``OSError`` when a segment is made, and the recorder holds the rows in memory.

- header: the magic ``MAGIC`` (8 bytes), then ``done``, the offset up to which rows are
  stored or journaled (8 bytes, little-endian);
- from ``HEADER`` on, records: a 4-byte little-endian length, then that many bytes of
  ``marshal`` of the row's plain tuple (a click has 14 fields, an event 10: the length of
  the tuple tells them apart). A zero length ends the records.

A record's bytes are written before its length, so the next start never reads a length
whose bytes are not there (a process killed between the two had not answered that click).
Several gateway processes may share a data directory (``serve --workers``): each holds an
``flock`` on its own segments, which the kernel releases when the process dies, so a
segment whose lock can be taken is a dead process's, and a live one's is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import mmap
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import structlog

from .store import Click, Event

__all__ = ["HEADER", "MAGIC", "SEGMENT_BYTES", "ClickLog", "LogPosition", "LogRange",
           "read_range", "read_ranges", "read_segment"]

log = structlog.get_logger("linkloop.clicklog")

MAGIC = b"LLCLOG1\0"
HEADER = 16
#: A segment's size: ~50,000 clicks of ~130 bytes, allocated on disk when it is made.
SEGMENT_BYTES = 8 << 20
_LENGTH = struct.Struct("<I")
_DONE = struct.Struct("<Q")
_CLICK_FIELDS = len(Click._fields)

#: (segment number, offset in it): how far the log is written, or done.
LogPosition = tuple[int, int]
#: (segment file, first offset, end offset): the records of one segment between two offsets.
LogRange = tuple[str, int, int]


class _Segment:
    """One mapped, locked segment file of this process."""

    def __init__(self, path: Path, number: int, size: int) -> None:
        self.path = path
        self.number = number
        self.size = size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Allocated, not a sparse ftruncate: see the module's docstring (SIGBUS).
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self.fd = fd
        self.map[:8] = MAGIC
        self.end = HEADER  # where the next record goes

    def close(self, *, remove: bool) -> None:
        self.map.close()
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)  # releases the lock: after the unlink, so nobody claims it


class ClickLog:
    """This process's segments: ``append`` on the event loop, ``mark_done`` after a write."""

    def __init__(self, directory: Path, owner: str = "w0",
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.owner = owner
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._next = 0

    # --- the hot path's side -----------------------------------------------------------------
    def append(self, row: Click | Event) -> None:
        """Put a row in the log (a memory copy); OSError when no segment can be made."""
        record = marshal.dumps(tuple(row))
        size = len(record)
        segment = self._segments[-1] if self._segments else self._new_segment()
        start = segment.end
        if start + 8 + size > segment.size:  # 4 for the length, 4 for the zero after it
            segment = self._new_segment()
            start = segment.end
        segment.map[start + 4:start + 4 + size] = record
        _LENGTH.pack_into(segment.map, start, size)  # last: the record now exists
        segment.end = start + 4 + size

    def _new_segment(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next += 1
        segment = _Segment(self.directory / f"{self.owner}-{os.getpid()}-{self._next}.log",
                           self._next, self.segment_bytes)
        self._segments.append(segment)
        return segment

    # --- the recorder's side -----------------------------------------------------------------
    def position(self) -> LogPosition:
        """How far the log is written now."""
        if not self._segments:
            return (self._next, HEADER)
        segment = self._segments[-1]
        return (segment.number, segment.end)

    def ranges(self, start: LogPosition, end: LogPosition) -> list[LogRange]:
        """The records between two positions, a range per segment: for the writer process,
        which reads them from the files (the page cache the mapping writes to)."""
        found = []
        for segment in self._segments:
            if start[0] <= segment.number <= end[0]:
                first = start[1] if segment.number == start[0] else HEADER
                last = end[1] if segment.number == end[0] else segment.end
                if last > first:
                    found.append((str(segment.path), first, last))
        return found

    def rows(self, log_range: LogRange) -> tuple[list[Click], list[Event]]:
        """The rows of a range of this process's segments, read from the mapping itself (it
        holds them even if someone removed the file)."""
        path, start, end = log_range
        segment = next(s for s in self._segments if str(s.path) == path)
        return _records(segment.map[start:end], 0, segment.path)

    def rows_of(self, ranges: Sequence[LogRange]) -> tuple[list[Click], list[Event]]:
        """The rows of consecutive ranges, in log order, from the mapping (``rows``)."""
        return _joined(self.rows(log_range) for log_range in ranges)

    def time_at(self, start: LogPosition) -> float | None:
        """When the first row at or after ``start`` was made; None when there is none."""
        for segment in self._segments:
            if segment.number >= start[0]:
                offset = start[1] if segment.number == start[0] else HEADER
                if offset < segment.end:
                    (size,) = _LENGTH.unpack_from(segment.map, offset)
                    fields = marshal.loads(segment.map[offset + 4:offset + 4 + size])
                    row = Click(*fields) if len(fields) == _CLICK_FIELDS else Event(*fields)
                    return row.ts
        return None

    def mark_done(self, upto: LogPosition) -> None:
        """Every row before ``upto`` is stored or journaled: segments wholly before it go,
        and the segment it is in records the mark."""
        number, offset = upto
        while self._segments and self._segments[0].number < number:
            self._segments.pop(0).close(remove=True)
        if self._segments and self._segments[0].number == number:
            _DONE.pack_into(self._segments[0].map, 8, offset)

    def close(self, *, done: bool) -> None:
        """Let go of the segments; with ``done`` (everything stored or journaled) remove them,
        else leave them for the next start."""
        for segment in self._segments:
            segment.close(remove=done)
        self._segments.clear()

    # --- the next start's side ---------------------------------------------------------------
    def claim_orphans(self) -> Iterator[tuple[Path, list[Click], list[Event]]]:
        """The rows past the mark of every segment whose process is gone, one segment at a
        time; the caller removes the file once the rows are safe elsewhere."""
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob("*.log")):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's segment
                if not path.exists():
                    continue  # claimed and removed by another process a moment ago
                with open(fd, "rb", closefd=False) as fh:
                    data = fh.read()
                clicks, events = read_segment(data, path)
                yield path, clicks, events
            finally:
                os.close(fd)


def read_segment(data: bytes, path: Path | None = None) -> tuple[list[Click], list[Event]]:
    """The rows of a segment's bytes past its ``done`` mark."""
    if data[:8] != MAGIC:
        log.warning("clicklog.not_a_segment", file=str(path))
        return [], []
    (offset,) = _DONE.unpack_from(data, 8)
    return _records(data, max(offset, HEADER), path)


def read_range(log_range: LogRange) -> tuple[list[Click], list[Event]]:
    """The rows of one range of a segment file (the writer process reads its batches so)."""
    path, start, end = log_range
    with open(path, "rb") as fh:
        data = os.pread(fh.fileno(), end - start, start)
    return _records(data, 0, Path(path))


def read_ranges(ranges: Sequence[LogRange]) -> tuple[list[Click], list[Event]]:
    """The rows of consecutive ranges (a batch may span segments), in log order: written
    together, so a batch is one transaction wherever a segment ends."""
    return _joined(read_range(log_range) for log_range in ranges)


def _joined(parts: Iterable[tuple[list[Click], list[Event]]]) -> tuple[list[Click], list[Event]]:
    clicks: list[Click] = []
    events: list[Event] = []
    for more_clicks, more_events in parts:
        clicks += more_clicks
        events += more_events
    return clicks, events


def _records(data: bytes, offset: int, path: Path | None) -> tuple[list[Click], list[Event]]:
    clicks: list[Click] = []
    events: list[Event] = []
    while offset + 4 <= len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        if not size or offset + 4 + size > len(data):
            break
        try:
            row = marshal.loads(data[offset + 4:offset + 4 + size])
            if len(row) == _CLICK_FIELDS:
                clicks.append(Click(*row))
            else:
                events.append(Event(*row))
        except (ValueError, TypeError, EOFError):
            log.warning("clicklog.unreadable_record", file=str(path), offset=offset)
        offset += 4 + size
    return clicks, events
