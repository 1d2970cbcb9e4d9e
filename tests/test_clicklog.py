"""The click log's segments: what one process appends, another reads back, exactly once."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.clicklog import ClickLog, read_range, read_ranges
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
