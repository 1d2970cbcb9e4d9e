"""Turns at SQLite's one write lock, so that the click writer never starves the gateway.

SQLite lets one connection write at a time. A connection that finds the lock taken sleeps
and tries again (SQLite's busy handler: up to 100 ms between tries), so the lock goes to
whoever tries in the moment it is free, not to whoever has waited longest. The click
writer, behind a spike, commits a batch and begins the next within a millisecond: a
console save or a stored WeCom callback waiting for the lock kept missing that moment and
failed after ``storage.timeout_seconds`` (bench/run.py's lock probe, one CPU, 60 s
saturating: 6 of 301 waits over 5 s).

So a short write says that it is waiting: it holds a shared ``flock`` on
``<database>-turns`` from before it asks for the lock until it has committed. The click
writer looks (``let_waiting_writes_in``) before and after it takes the lock for a
transaction, and while a write waits it lets the lock go and waits for it to finish.
Looking takes the file exclusively for two system calls; a short write that finds it so
tries again for a while, then goes on without its turn (as before turns). The kernel
drops a process's flocks when it dies, so a killed gateway never holds the writer up.

The file holds nothing. It is made with the database's mode (and owner, when made by
root), as SQLite makes its ``-wal`` and ``-shm``, so that whoever opens the database next
can take turns too; an existing one is never changed, and never opened through a link.
Where it can't be opened, there are no turns: writes wait in SQLite's busy handler, as
they did before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

__all__ = ["WriteTurns"]

log = structlog.get_logger("linkloop.store")

#: How often a wait here looks again (always on a storage thread, never on an event loop).
_POLL_SECONDS = 0.005


class WriteTurns:
    """The turns file of one SQLite database, opened by one store (one open file: the
    flocks of two stores in one process are as separate as two processes')."""

    def __init__(self, database: Path) -> None:
        # The file itself, not the path it was reached by (a symlinked data directory):
        # every process that opens the database must find the same turns file.
        database = Path(os.path.realpath(database))
        self.path = database.with_name(database.name + "-turns")
        self._fd = _open(self.path, database)

    @contextlib.contextmanager
    def waiting(self, limit: float) -> Iterator[None]:
        """Around a short write, from before it asks for the lock until it has committed.
        Waits at most ``limit`` for its turn (a click writer looking), then goes on."""
        taken = self._take(fcntl.LOCK_SH, limit)
        try:
            yield
        finally:
            if taken:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def let_waiting_writes_in(self, limit: float) -> bool:
        """The click writer's look: wait until no short write holds its turn, at most
        ``limit`` seconds; whether none does now."""
        if not self._take(fcntl.LOCK_EX, limit):
            return self._fd < 0
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return True

    def waiting_writes(self) -> bool:
        """Whether a short write holds its turn now."""
        return not self.let_waiting_writes_in(0)

    def _take(self, kind: int, limit: float) -> bool:
        if self._fd < 0:
            return False
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(self._fd, kind | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_SECONDS)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open(path: Path, database: Path) -> int:
    """The turns file's descriptor; -1 (no turns) where it can't be opened.

    Never through a link: the data directory is the service's, and a link planted there
    must not lead a command run as root to another file (let alone hand it over)."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = _existing(path, flags)
    except OSError as exc:
        return _none(path, exc)
    else:  # made now: as SQLite makes its -wal and -shm
        with contextlib.suppress(OSError):
            made = os.stat(database)
            os.fchmod(fd, made.st_mode & 0o666)
            if os.geteuid() == 0:
                os.fchown(fd, made.st_uid, made.st_gid)
        return fd
    if fd >= 0:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
            os.close(fd)
            return _none(path, OSError(f"{path} is not a plain file"))
    return fd


def _existing(path: Path, flags: int) -> int:
    """An existing turns file, read-write or, made by another user, read-only (a flock
    needs no write access)."""
    try:
        return os.open(path, flags | os.O_RDWR)
    except PermissionError:
        try:
            return os.open(path, flags | os.O_RDONLY)
        except OSError as exc:
            return _none(path, exc)
    except OSError as exc:
        return _none(path, exc)


def _none(path: Path, exc: OSError) -> int:
    log.warning("store.no_write_turns", path=str(path), error=str(exc))
    return -1
