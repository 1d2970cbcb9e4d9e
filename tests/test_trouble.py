"""Trouble that repeats is said when it starts, now and then while it lasts, and when it ends."""

from __future__ import annotations

import structlog

from gateway.trouble import Trouble


def test_an_outage_is_said_once_reminded_then_said_over() -> None:
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs() as logs:
        quiet = Trouble(log, "x.failed", "x.back")  # reminds every 5 minutes
        for _ in range(50):
            quiet.failed(error="away")
        assert quiet.on
        quiet.ok()
        quiet.ok()  # nothing to say: it was fine already
        assert not quiet.on
        quiet.failed(error="away again")
    assert [(e["event"], e.get("error"), e.get("failures")) for e in logs] == [
        ("x.failed", "away", None), ("x.back", None, 50), ("x.failed", "away again", None)]

    with structlog.testing.capture_logs() as logs:
        eager = Trouble(log, "y.failed", "y.back", remind_after=0)
        for _ in range(3):
            eager.failed(error="away")
        eager.ok()
    # The reminders say how long and how many times; the end, how many in all.
    assert [(e["event"], e.get("failures"), "ongoing_seconds" in e) for e in logs] == [
        ("y.failed", None, False), ("y.failed", 2, True), ("y.failed", 3, True),
        ("y.back", 3, False)]
