"""The click log's segments: what one process appends, another reads back, exactly once."""

from __future__ import annotations

import marshal
import os
import stat
from pathlib import Path

import pytest
import structlog

from gateway.clicklog import HEADER, ClickLog, read_range, read_ranges
from gateway.store import Click, Event


def _click(n: int, merchant: str = "acme") -> Click:
    return Click(f"c{n:06d}", merchant, n % 7, 1_765_000_000.0 + n, "2026-12-06", "taobao",
                 "ua", f"v{n}", "ab" * 8, n % 5 == 0, True, "ios",
                 None if n % 2 else "live", "redirect")


def _event(n: int) -> Event:
    return Event(f"e{n:06d}", "brew", 3 if n % 3 else None, "storefront_open", "taobao",
                 1_765_000_000.5 + n, "2026-12-06", f"c{n:06d}", "taobao")


def test_rows_cross_segments_in_order_and_done_segments_go(tmp_path: Path) -> None:
    clicklog = ClickLog(tmp_path, segment_bytes=4096)  # ~30 rows a segment
    rows = [_event(n) if n % 10 == 3 else _click(n) for n in range(300)]
    start = clicklog.position()
    for row in rows[:200]:
        clicklog.append(row)
    middle = clicklog.position()
    for row in rows[200:]:
        clicklog.append(row)
    end = clicklog.position()
    assert len(list(tmp_path.glob("*.log"))) > 5

    def between(a: tuple[int, int], b: tuple[int, int]) -> list[Click | Event]:
        found: list[Click | Event] = []
        for log_range in clicklog.ranges(a, b):
            clicks, events = clicklog.rows(log_range)
            assert (clicks, events) == read_range(log_range)  # the writer reads the same
            found += [*clicks, *events]
        return found

    # A batch spanning segments is read whole, clicks in log order (one transaction).
    clicks, events = read_ranges(clicklog.ranges(start, middle))
    assert clicks == [row for row in rows[:200] if isinstance(row, Click)]
    assert events == [row for row in rows[:200] if isinstance(row, Event)]

    key = lambda row: row.id  # noqa: E731 (clicks and events come apart per range)
    assert sorted(between(start, middle), key=key) == sorted(rows[:200], key=key)
    assert sorted(between(middle, end), key=key) == sorted(rows[200:], key=key)
    clicklog.mark_done(middle)
    left = sorted(tmp_path.glob("*.log"))
    assert 1 <= len(left) < 5
    clicklog.close(done=False)
    # Another process (here: a ClickLog of its own) finds exactly the rows past the mark.
    other = ClickLog(tmp_path)
    found: list[Click | Event] = []
    for path, clicks, events in other.claim_orphans():
        found += [*clicks, *events]
        path.unlink()
    assert sorted(found, key=key) == sorted(rows[200:], key=key)
    assert not list(tmp_path.glob("*.log"))


def test_a_live_process_segments_are_not_claimed(tmp_path: Path) -> None:
    live = ClickLog(tmp_path)
    live.append(_click(1))
    assert list(ClickLog(tmp_path).claim_orphans()) == []  # its lock is held
    live.close(done=False)
    claimed = list(ClickLog(tmp_path).claim_orphans())
    assert [clicks for _, clicks, _ in claimed] == [[_click(1)]]


def test_a_record_cut_short_ends_the_segment_and_loses_nothing_before_it(
        tmp_path: Path) -> None:
    clicklog = ClickLog(tmp_path)
    for n in range(3):
        clicklog.append(_click(n))
    _, end = clicklog.position()
    clicklog.close(done=False)
    path = next(tmp_path.glob("*.log"))
    # A length whose bytes never came: the process died between the two writes the other
    # way round, or the disk kept half a page.
    with open(path, "r+b") as fh:
        fh.seek(end)
        fh.write((10_000).to_bytes(4, "little"))
        fh.seek(end + 4)
        fh.write(os.urandom(16))
    claimed = list(ClickLog(tmp_path).claim_orphans())
    assert [clicks for _, clicks, _ in claimed] == [[_click(0), _click(1), _click(2)]]


def test_segments_are_private_and_named_owner_pid_number(tmp_path: Path) -> None:
    # Rows hold visitor ids and IP hashes: only the gateway's user may read a segment.
    # Each is named <owner>-<pid>-<n>.log, n counting up from 1, under a directory made
    # on the first append however deep it is.
    directory = tmp_path / "data" / "clicklog"
    clicklog = ClickLog(directory, owner="w3", segment_bytes=4096)
    for n in range(100):
        clicklog.append(_click(n))
    names = sorted(p.name for p in directory.glob("*.log"))
    count = len(names)
    assert count > 2
    assert names == sorted(f"w3-{os.getpid()}-{n}.log" for n in range(1, count + 1))
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.glob("*.log")} == {0o600}
    clicklog.close(done=True)  # everything stored: nothing left for the next start
    assert not list(directory.glob("*.log"))


def test_a_record_that_exactly_fits_stays_in_its_segment(tmp_path: Path) -> None:
    size = len(marshal.dumps(tuple(_click(1))))
    # The header, one record with its length, and the zero length that ends the records.
    clicklog = ClickLog(tmp_path, segment_bytes=HEADER + 4 + size + 4)
    clicklog.append(_click(1))
    assert len(list(tmp_path.glob("*.log"))) == 1
    assert clicklog.position() == (1, HEADER + 4 + size)
    clicklog.append(_click(3))  # the next one does not fit: a new segment
    assert clicklog.position() == (2, HEADER + 4 + size)
    clicklog.close(done=False)


def test_a_range_reads_exactly_its_rows_and_no_range_means_none(tmp_path: Path) -> None:
    clicklog = ClickLog(tmp_path)
    marks = []
    for n in range(20):
        marks.append(clicklog.position())
        clicklog.append(_click(n))
    assert clicklog.ranges(marks[10], marks[10]) == []  # no rows between: no range at all
    (log_range,) = clicklog.ranges(marks[5], marks[10])
    assert read_range(log_range) == clicklog.rows(log_range) == (
        [_click(n) for n in range(5, 10)], [])
    clicklog.close(done=False)


def test_when_the_first_row_from_a_position_was_made(tmp_path: Path) -> None:
    # /readyz's oldest pending row: the time of the first row at or after a position,
    # whichever segment it is in, click or event; None past the last.
    clicklog = ClickLog(tmp_path, segment_bytes=4096)
    rows: list[Click | Event] = [_event(n) if n % 4 == 1 else _click(n) for n in range(100)]
    marks = []
    for row in rows:
        marks.append(clicklog.position())
        clicklog.append(row)
    assert marks[0] == (0, HEADER)  # before the first segment: where it will start
    assert clicklog.time_at(marks[0]) == rows[0].ts
    # The first row of the second segment: the position before it is the first's end.
    first = next(n for n in range(100) if marks[n + 1][0] == 2)
    assert marks[first][0] == 1 and marks[first + 1] > (2, HEADER)
    for n in (1, 5, first - 1, first, first + 1, first + 5, 99):
        assert clicklog.time_at(marks[n]) == rows[n].ts, n
    assert clicklog.time_at((2, HEADER)) == rows[first].ts
    assert clicklog.time_at(clicklog.position()) is None
    clicklog.close(done=False)


def test_the_done_mark_hands_over_exactly_the_rows_after_it(tmp_path: Path) -> None:
    empty = ClickLog(tmp_path / "empty")
    empty.mark_done(empty.position())  # nothing written yet: nothing to mark
    clicklog = ClickLog(tmp_path / "log")
    marks = []
    for n in range(10):
        marks.append(clicklog.position())
        clicklog.append(_click(n))
    clicklog.mark_done(marks[4])
    clicklog.close(done=False)
    claimed = list(ClickLog(tmp_path / "log").claim_orphans())
    assert [clicks for _, clicks, _ in claimed] == [[_click(n) for n in range(4, 10)]]


def test_a_live_segment_before_a_dead_one_does_not_stop_the_claim(tmp_path: Path) -> None:
    live = ClickLog(tmp_path, owner="a")  # sorts first, and its lock is held
    live.append(_click(1))
    dead = ClickLog(tmp_path, owner="b")
    dead.append(_click(2))
    dead.close(done=False)
    assert [clicks for _, clicks, _ in ClickLog(tmp_path).claim_orphans()] == [[_click(2)]]
    live.close(done=True)


def test_unreadable_files_and_records_are_logged_by_file_and_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    clicklog = ClickLog(directory)
    marks = []
    for n in range(3):
        marks.append(clicklog.position())
        clicklog.append(_click(n))
    (log_range,) = clicklog.ranges(marks[0], clicklog.position())
    segment = Path(log_range[0])
    # The middle record's bytes damaged (its length intact): the file is the mapping.
    with open(segment, "r+b") as fh:
        fh.seek(marks[1][1] + 4)
        fh.write(b"\xff" * 8)
    stray = directory / "stray.log"
    stray.write_bytes(b"not a segment")
    with structlog.testing.capture_logs() as logs:
        assert clicklog.rows(log_range) == read_range(log_range) == ([_click(0), _click(2)], [])
        clicklog.close(done=False)
        claimed = {path.name: clicks for path, clicks, _ in ClickLog(directory).claim_orphans()}
    assert claimed == {segment.name: [_click(0), _click(2)], "stray.log": []}
    in_range = marks[1][1] - marks[0][1]  # rows() and read_range count from the range
    assert [(e["event"], e["file"], e.get("offset")) for e in logs] == [
        ("clicklog.unreadable_record", str(segment), in_range),
        ("clicklog.unreadable_record", str(segment), in_range),
        ("clicklog.not_a_segment", str(stray), None),
        ("clicklog.unreadable_record", str(segment), marks[1][1])]


def test_a_failing_segment_is_an_oserror_and_leaves_no_file(tmp_path: Path) -> None:
    # What the recorder catches to fall back to memory: an OSError, nothing half made.
    with pytest.raises(OSError):
        ClickLog(tmp_path, segment_bytes=-1).append(_click(1))
    assert not list(tmp_path.glob("*.log"))


def test_segments_removed_from_under_a_live_log_close_quietly(tmp_path: Path) -> None:
    clicklog = ClickLog(tmp_path, segment_bytes=4096)
    for n in range(100):
        clicklog.append(_click(n))
    for path in tmp_path.glob("*.log"):
        path.unlink()  # an operator clearing the directory
    clicklog.mark_done(clicklog.position())
    clicklog.close(done=True)


@pytest.mark.parametrize("past", [4, 0xFFFFFFFF])
def test_a_length_past_the_segments_end_ends_it_quietly(tmp_path: Path, past: int) -> None:
    # A torn write's length can be anything: one reaching past the file (by a few bytes
    # or by far) is the end of the records, not an unreadable record to warn about.
    clicklog = ClickLog(tmp_path, segment_bytes=4096)
    clicklog.append(_click(1))
    _, end = clicklog.position()
    clicklog.close(done=False)
    path = next(tmp_path.glob("*.log"))
    length = min(4096 - end - 4 + past, 0xFFFFFFFF)
    with open(path, "r+b") as fh:
        fh.seek(end)
        fh.write(length.to_bytes(4, "little") + os.urandom(16))
    with structlog.testing.capture_logs() as logs:
        claimed = list(ClickLog(tmp_path).claim_orphans())
    assert [clicks for _, clicks, _ in claimed] == [[_click(1)]]
    assert logs == []
