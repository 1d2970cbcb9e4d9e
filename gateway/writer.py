"""Clicks and events written by a child process, so storage work never holds the loop's GIL.

The gateway answers share links on one event loop. When a thread in the same process wrote
the clicks, every batch it bound, stepped and committed took the interpreter lock away from
the loop, a few hundred microseconds at a time, and requests queued behind it: that, not
the database, was most of the gap to a bare aiohttp app. Here the recorder hands each batch
to ``python -m gateway.writer``, which opens the same storage (either engine, migrations
already applied by the gateway) and answers every batch with "written" or the error.

A batch is normally a range of the click log (clicklog.py): the child reads the rows from
the segment files itself, so the event loop sends a path and two offsets whatever the
batch's size, and never pickles a row. Rows the log lacks (a journal's replay) come through
the pipe, pickled.

The recorder's guarantees hold unchanged: a batch counts as written only once the child
says it committed; an error, or a child that died or stopped answering, is a storage
failure (the batch goes to the journal and is retried), and the next batch starts a new
child. Storage skips ids it already holds, so a batch the child committed just before dying
is never counted twice.

The child runs at a lower priority (``recorder.writer_nice``), never on idle CPU time only:
on one CPU, busy with requests, an idle-priority writer got no time at all, its queue
filled and clicks went to the journal on the event loop. At nice 10 the kernel gives it
about a tenth of a contended CPU: a spike is answered at nearly full speed and its clicks
wait in the click log, durable, to be written after it (bench/run.py --one-cpu, 60 s
saturating, batches of 20,000: 0.47x bare, written 49 s after the run); at nice 0 it
keeps pace (0.34x bare).
A writer that falls behind takes larger batches, which cost less per click.

Frames both ways are a 4-byte length and a pickle, between two processes of the same
program. The child ignores SIGINT and SIGTERM and stops when its input closes: the gateway
closes it only after its last batch, so Ctrl-C or a supervisor's SIGTERM to the whole
process group never cuts the child off before the clicks are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from typing import IO, Any

import structlog

from .clicklog import LogRange, read_ranges
from .recorder import record_in_batches
from .settings import Settings
from .store import Click, Event, StoreUnavailable
from .trouble import Trouble

__all__ = ["WriterProcess"]

log = structlog.get_logger("linkloop.writer")

_LENGTH = 4
#: Longest a child may take over one batch before it counts as dead (stopped, stuck).
_HUNG_AFTER = 120.0
#: Longest the gateway waits for the child to finish its last batch and exit on shutdown.
_EXIT_TIMEOUT = 60.0


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_LENGTH, "big") + payload


class WriterProcess:
    """``record(clicks, events)`` and ``record_log(ranges)`` for the recorder, done by a
    child process.

    One batch is in flight at a time (the recorder awaits each); the child starts with the
    first batch and again after it has died.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nice: int = settings["recorder.writer_nice"]
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._child.pid if self._child is not None else None

    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        """Store rows the recorder holds (a journal's replay, rows the click log lacks)."""
        if not clicks and not events:
            return
        # Plain tuples cross the pipe: a named tuple pickles as a call to its class, three
        # times the work, and this side of the pipe is the event loop.
        await self._send(("rows", list(map(tuple, clicks)), list(map(tuple, events))))

    async def record_log(self, ranges: Sequence[LogRange]) -> None:
        """Store the rows in these ranges of the click log: the child reads them itself, so
        the event loop sends a few paths and offsets, however many rows there are."""
        if ranges:
            await self._send(("log", list(ranges)))

    async def _send(self, batch: Any) -> None:
        """Hand one batch to the child and wait for its answer."""
        async with self._lock:
            # A child that died between batches (killed, out of memory) is replaced, and a
            # batch whose child died under it is sent once more to a new one: storage skips
            # whatever part of it the old one committed. A second death is a failure.
            for attempt in (1, 2):
                child = self._child
                if child is None or child.returncode is not None:
                    child = await self._start()
                try:
                    error = await asyncio.wait_for(self._ask(child, batch), _HUNG_AFTER)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    # Dead, or stopped answering (stopped, stuck): a death, as far as the
                    # batch is concerned.
                    code = await self._lost(child)
                    log.warning("writer.lost", pid=child.pid, code=code, attempt=attempt,
                                error=type(exc).__name__)
                    if attempt == 2:
                        raise StoreUnavailable(f"writer process lost ({code})") from exc
                    continue
                except BaseException:
                    # Cancelled mid-batch: this child's answer would reach the next batch.
                    self._child = None
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    raise
                if error is not None:
                    raise StoreUnavailable(error)
                return

    async def _start(self) -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.writer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            error = await self._ask(child, self.settings)
        except (OSError, asyncio.IncompleteReadError) as exc:
            code = await self._lost(child)
            raise StoreUnavailable(f"writer process did not start ({code}): {exc!r}") from exc
        except BaseException:  # cancelled while it started: no child left behind
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            raise
        if error is not None:  # storage would not open: the child has exited
            await self._lost(child)
            raise StoreUnavailable(error)
        log.info("writer.started", pid=child.pid, nice=self.nice)
        self._child = child
        return child

    @staticmethod
    async def _ask(child: asyncio.subprocess.Process, value: Any) -> str | None:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(_frame(value))
        await child.stdin.drain()
        size = int.from_bytes(await child.stdout.readexactly(_LENGTH), "big")
        answer: str | None = pickle.loads(await child.stdout.readexactly(size))
        return answer

    async def _lost(self, child: asyncio.subprocess.Process) -> int | None:
        """Reap a child that failed; the next batch starts another."""
        self._child = None
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        return await child.wait()

    async def close(self) -> None:
        """Close the child's input: it finishes (it has no batch left) and exits."""
        async with self._lock:
            child, self._child = self._child, None
            if child is None:
                return
            assert child.stdin is not None
            child.stdin.close()
            try:
                code = await asyncio.wait_for(child.wait(), _EXIT_TIMEOUT)
            except TimeoutError:
                log.error("writer.exit_timeout", pid=child.pid)
                await self._lost(child)
                return
            if code:
                log.warning("writer.exited", pid=child.pid, code=code)


# --- the child ------------------------------------------------------------------------------
def _read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; EOFError when the gateway has closed the pipe."""
    head = stream.read(_LENGTH)
    if len(head) < _LENGTH:
        raise EOFError
    size = int.from_bytes(head, "big")
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


async def _serve(settings: Settings, inbox: IO[bytes], outbox: IO[bytes]) -> None:
    from .store import open_store

    def answer(value: str | None) -> None:
        outbox.write(_frame(value))
        outbox.flush()

    try:
        # A batch may wait long for a CPU behind the requests (one busy CPU, nice 10): its
        # calls get the gateway's limit for a stuck child, not a request's, or the writer
        # would give up exactly when it is busiest. A lock, or a PostgreSQL statement the
        # server does not answer, still fails within storage.timeout_seconds (outages are
        # told at once).
        store = await open_store(settings, call_limit=_HUNG_AFTER)
    except Exception as exc:
        # The gateway logs it (the batch's storage failure) and tries a new child later:
        # a traceback here on every try of an outage would say nothing more.
        answer(f"storage did not open: {exc}")
        return
    answer(None)
    size = settings["recorder.batch_size"]
    loop = asyncio.get_running_loop()
    # The gateway retries a failed batch every few seconds for as long as an outage lasts:
    # the child says why when the outage begins and when it ends, not on every retry's.
    outage = Trouble(log, "writer.batch_failed", "writer.batch_back")
    try:
        while True:
            try:
                batch = await loop.run_in_executor(None, _read_frame, inbox)
            except EOFError:
                return
            try:
                if batch[0] == "log":
                    await record_in_batches(store, *read_ranges(batch[1]), size)
                else:
                    await store.record([Click(*row) for row in batch[1]],
                                       [Event(*row) for row in batch[2]])
            except Exception as exc:
                outage.failed(error=str(exc) or type(exc).__name__)
                answer(str(exc) or type(exc).__name__)
            else:
                outage.ok()
                answer(None)
    finally:
        await store.close()


def main() -> int:
    # Stop only when the gateway closes the pipe, after its last batch (see the docstring).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox = os.fdopen(os.dup(0), "rb")
    outbox = os.fdopen(os.dup(1), "wb")
    # Anything else printed goes to stderr, never into the frames.
    os.dup2(2, 1)
    settings: Settings = _read_frame(inbox)
    # Before any thread starts: the storage engine's threads inherit the priority.
    os.nice(settings["recorder.writer_nice"])
    from .logs import configure_logging

    configure_logging(settings["log.level"], settings["log.format"])
    structlog.contextvars.bind_contextvars(process="writer")
    try:
        asyncio.run(_serve(settings, inbox, outbox))
    except Exception:
        log.exception("writer.failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
