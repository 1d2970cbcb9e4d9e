"""Turns at SQLite's one write lock, so that the click writer never starves the gateway.

SQLite lets one connection write at a time. A connection that finds the lock taken sleeps
and tries again (SQLite's busy handler: up to 100 ms between tries), so the lock goes to
whoever tries in the moment it is free, not to whoever has waited longest. The click
writer, behind a spike, commits a batch and begins the next within a millisecond: a
console save or a stored WeCom callback waiting for the lock kept missing that moment and
failed after ``storage.timeout_seconds`` (bench/run.py's lock probe, one CPU, 60 s
saturating: 6 of 301 waits over 5 s).

So a short write says that it is waiting: it holds a shared ``flock`` on
``<database>-turns`` from before it asks for the lock until it has committed. Before each
of its transactions the click writer lets such writes go first: it takes the same file
exclusively, which it can only do while no write is waiting, and lets it go at once. It
waits at most ``limit`` for that: a write that waits longer is not a short one. The kernel
drops a process's flocks when it dies, so a killed gateway never holds the writer up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WriteTurns"]

#: How often the click writer looks again while a write is waiting (it waits in a thread
#: of its own, never on an event loop).
_POLL_SECONDS = 0.005


class WriteTurns:
    """The turns file of one SQLite database, opened by one process."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-turns")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a short write, from before it asks for the lock until it has committed."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def let_waiting_writes_in(self, limit: float) -> None:
        """Before a long transaction: return once no short write is waiting, or after
        ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(_POLL_SECONDS)
                continue
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            return

    def close(self) -> None:
        os.close(self._fd)
