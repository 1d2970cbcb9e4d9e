"""Trouble that repeats (storage away, retried every few seconds) said once, not per retry.

A background task that retries every second, or a readiness probe every few, logged a
warning each time: an hour's outage was thousands of the same line, and the line an
operator needs (when it began, when it ended) was lost among them. ``Trouble`` says it when
it starts, again at most every ``remind_after`` seconds while it lasts (how long, how many
failures), and once when it ends.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Trouble"]


class Trouble:
    def __init__(self, logger: Any, failed: str, back: str, *,
                 remind_after: float = 300.0) -> None:
        self._log = logger
        self.failed_event = failed
        self.back_event = back
        self.remind_after = remind_after
        self._since: float | None = None
        self._said_at = 0.0
        self._failures = 0

    @property
    def on(self) -> bool:
        """Whether the trouble is going on (failed since it last went well)."""
        return self._since is not None

    def failed(self, **fields: Any) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._said_at = now
            self._log.warning(self.failed_event, **fields)
        elif now - self._said_at >= self.remind_after:
            self._said_at = now
            self._log.warning(self.failed_event, ongoing_seconds=round(now - self._since),
                              failures=self._failures, **fields)

    def ok(self, **fields: Any) -> None:
        if self._since is not None:
            self._log.info(self.back_event, after_seconds=round(time.monotonic() - self._since),
                           failures=self._failures, **fields)
        self._since = None
        self._failures = 0
