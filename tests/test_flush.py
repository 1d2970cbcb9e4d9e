"""``Recorder.flush()`` returns only once every click accepted before it is written.

Tests (and shutdown) flush and then read storage. If the background task had just taken
the pending batch and was still writing it, a flush that found nothing pending returned
at once, and the read missed those clicks: a test that passed or failed by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from gateway.recorder import Journal, Recorder
from gateway.store import Click, Event

from .wait import until


class HeldSink:
    """Storage whose writes wait until the test lets them through."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.stored: list[str] = []

    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        self.started += 1
        await self.release.wait()
        self.stored.extend(c.id for c in clicks)


def _click(n: int) -> Click:
    return Click(id=f"c{n:011d}", merchant_id="m1", product_id=1, ts=1.0, day="2026-11-01",
                 platform="taobao", source="ua", visitor=f"v{n}", ip_hash="h")


async def test_flush_waits_for_the_batch_the_task_is_writing(tmp_path: Path) -> None:
    sink = HeldSink()
    recorder = Recorder(sink, Journal(tmp_path / "journal"), queue_size=100,  # type: ignore[arg-type]
                        flush_interval=0.01, batch_size=100, retry_max=0.1)
    recorder.start()
    recorder.click(_click(1))
    await until(lambda: sink.started == 1, what="the task writing its batch")
    assert recorder.pending == 0  # the batch left memory: nothing is "pending" any more
    flushing = asyncio.ensure_future(recorder.flush())
    for _ in range(5):  # yield to the loop: let the flush run as far as it can
        await asyncio.sleep(0)
    assert not flushing.done(), "flush returned while the click was still being written"
    sink.release.set()
    await flushing
    assert sink.stored == ["c00000000001"]
    await recorder.close()
