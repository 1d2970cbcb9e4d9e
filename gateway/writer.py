"""Clicks and events written by a child process, so storage work never holds the loop's GIL.

The gateway answers share links on one event loop. When a thread in the same process wrote
the clicks, every batch it bound, stepped and committed took the interpreter lock away from
the loop, a few hundred microseconds at a time, and requests queued behind it: that, not
the database, was most of the gap to a bare aiohttp app. Here the recorder hands each batch
to ``python -m gateway.writer``, which opens the same storage (either engine, migrations
already applied by the gateway) and answers every batch with "written" or the error.

The recorder's guarantees hold unchanged: a batch counts as written only once the child
says it committed; an error, or a child that died, is a storage failure (the batch goes to
the journal and is retried), and the next batch starts a new child. Storage skips ids it
already holds, so a batch the child committed just before dying is never counted twice.

The child runs on CPU time nobody else wants (``_yield_to_requests``), so it never slows a
request. When every CPU is busy with requests for long, though, such a child gets almost
no time at all (measured: ``serve --workers 2`` under full load wrote 1,000-5,000 clicks
per worker in 40 s while 87% of them spilled into the journal on the event loop). So when
an idle child has held a batch for ``recorder.writer_starved_seconds`` *and* spent at
least half of that time waiting for a CPU (Linux's per-thread run delay; a child waiting
on a lock or the disk is slow, not starved, and is left alone), the batch goes to a new
child at normal priority. The starved one is killed (storage skips what it committed).
Normal priority lasts ``NORMAL_FOR`` seconds, twice as long each time the idle child
starves again right after (up to ``NORMAL_MAX``), then the next batch goes to an idle
child again.

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
import time
from collections.abc import Sequence
from typing import IO, Any

import structlog

from .settings import Settings
from .store import Click, Event, StoreUnavailable

__all__ = ["WriterProcess"]

log = structlog.get_logger("linkloop.writer")

_LENGTH = 4
#: Longest an idle child may hold a batch, starved or not, before it counts as dead.
_HUNG_AFTER = 60.0
#: Longest the gateway waits for the child to finish its last batch and exit on shutdown.
_EXIT_TIMEOUT = 60.0


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_LENGTH, "big") + payload


class WriterProcess:
    """``record(clicks, events)`` for the recorder, done by a child process.

    One batch is in flight at a time (the recorder awaits each); the child starts with the
    first batch and again after it has died.
    """

    #: Seconds of normal priority after an idle child starved; doubled (up to NORMAL_MAX)
    #: when the next idle child starves too within a minute of its start.
    NORMAL_FOR = 30.0
    NORMAL_MAX = 600.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.starved_after: float = settings["recorder.writer_starved_seconds"]
        self._child: asyncio.subprocess.Process | None = None
        #: Whether the child runs (the next one will run) on idle CPU time only.
        self._idle = True
        #: Normal priority lasts until then; how long the last spell was; when the first
        #: batch after the last spell went to an idle child.
        self._normal_until = 0.0
        self._normal_for = self.NORMAL_FOR
        self._idle_since = 0.0
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._child.pid if self._child is not None else None

    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        if not clicks and not events:
            return
        # Plain tuples cross the pipe: a named tuple pickles as a call to its class, three
        # times the work, and this side of the pipe is the event loop.
        rows = (list(map(tuple, clicks)), list(map(tuple, events)))
        async with self._lock:
            # A child that died between batches (killed, out of memory) is replaced, and a
            # batch whose child died under it is sent once more to a new one: storage skips
            # whatever part of it the old one committed. A second death is a failure.
            deaths = 0
            while True:
                child = await self._running_child()
                try:
                    error = await self._answer(child, rows)
                except _Starved:
                    # Every CPU is busy with requests: a child at normal priority takes
                    # this batch (storage skips what the starved one committed).
                    await self._lost(child)
                    self._go_normal()
                    log.warning("writer.starved", pid=child.pid, seconds=self.starved_after,
                                clicks=len(clicks), events=len(events),
                                normal_for=self._normal_for)
                    continue
                except (OSError, asyncio.IncompleteReadError) as exc:
                    code = await self._lost(child)
                    deaths += 1
                    log.warning("writer.lost", pid=child.pid, code=code, attempt=deaths)
                    if deaths == 2:
                        raise StoreUnavailable(f"writer process exited ({code})") from exc
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

    async def _answer(self, child: asyncio.subprocess.Process, rows: Any) -> str | None:
        """The child's answer to a batch; ``_Starved`` if an idle child can't get a CPU."""
        asking = asyncio.ensure_future(self._ask(child, rows))
        hung_at = time.monotonic() + max(_HUNG_AFTER, 10 * self.starved_after)
        try:
            while True:
                waited = _run_delay(child.pid)
                done, _ = await asyncio.wait(
                    {asking}, timeout=self.starved_after if self._idle else None)
                if done:
                    return asking.result()
                now = _run_delay(child.pid)
                if waited is not None and now is not None and (
                        now - waited >= self.starved_after / 2):
                    raise _Starved
                if time.monotonic() > hung_at:
                    # Neither writing nor queued for a CPU for a minute (stopped, stuck):
                    # a death, as far as the batch is concerned.
                    raise OSError("writer process stopped answering")
                # Slow, not starved (a lock, the disk): keep waiting.
        finally:
            if not asking.done():
                asking.cancel()
                # Wait for it without taking on its outcome: only this task's own
                # cancellation may come out of here.
                await asyncio.wait({asking})

    def _go_normal(self) -> None:
        """The next child runs at normal priority; for longer if idle ones keep starving."""
        now = time.monotonic()
        again = now - self._idle_since < 60.0 and self._normal_until > 0
        self._normal_for = (min(2 * self._normal_for, self.NORMAL_MAX) if again
                            else self.NORMAL_FOR)
        self._normal_until = now + self._normal_for
        self._idle = False

    async def _running_child(self) -> asyncio.subprocess.Process:
        """The child for the next batch: the running one, or a new one when there is none,
        it died, or its spell at normal priority is over."""
        child = self._child
        if not self._idle and time.monotonic() > self._normal_until:
            self._idle, self._idle_since = True, time.monotonic()
            if child is not None and child.returncode is None:
                await self._stop(child)
            child = None
        if child is not None and child.returncode is None:
            return child
        return await self._start()

    async def _start(self) -> asyncio.subprocess.Process:
        idle = self._idle
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.writer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            error = await self._ask(child, (self.settings, idle))
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
        log.info("writer.started", pid=child.pid, idle=idle)
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
            if self._child is not None:
                await self._stop(self._child)

    async def _stop(self, child: asyncio.subprocess.Process) -> None:
        """Let a child with no batch in hand exit: close its input, wait for it."""
        self._child = None
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


class _Starved(Exception):
    """An idle-priority child spent the batch's time waiting for a CPU."""


def _run_delay(pid: int | None) -> float | None:
    """Seconds the threads of a process have waited for a CPU so far (Linux), else None."""
    if pid is None:
        return None
    total = 0
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{thread}/schedstat"
            with contextlib.suppress(FileNotFoundError), open(path) as fh:  # may just end
                total += int(fh.read().split()[1])  # ns on a runqueue, not running
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


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


async def _serve(settings: Settings, idle: bool, inbox: IO[bytes], outbox: IO[bytes]) -> None:
    from .store import open_store

    def answer(value: str | None) -> None:
        outbox.write(_frame(value))
        outbox.flush()

    try:
        store = await open_store(settings)
    except Exception as exc:
        # The gateway logs it (the batch's storage failure) and tries a new child later:
        # a traceback here on every try of an outage would say nothing more.
        answer(f"storage did not open: {exc}")
        return
    # Started at normal priority: a start is short and rare, and may be the one that
    # replaces a starved child. The batches run on idle CPU time when asked to.
    if idle:
        _yield_to_requests()
    answer(None)
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                clicks, events = await loop.run_in_executor(None, _read_frame, inbox)
            except EOFError:
                return
            try:
                await store.record([Click(*row) for row in clicks],
                                   [Event(*row) for row in events])
            except Exception as exc:
                log.warning("writer.batch_failed", error=str(exc) or type(exc).__name__)
                answer(str(exc) or type(exc).__name__)
            else:
                answer(None)
    finally:
        await store.close()


def _yield_to_requests() -> None:
    """Run the writer on CPU time nobody else wants (Linux SCHED_IDLE; elsewhere, nice 19).

    Requests first: a batch can wait a moment in the pipe, a shopper should not. Measured
    under load, a merely low-priority writer still cost the event loop 10-15% of its time
    waiting for a CPU: the kernel counts a CPU running the writer as busy and places the
    woken load generator (or any other process) beside the event loop instead. A CPU that
    runs only SCHED_IDLE work counts as idle. The policy is per thread: every thread of
    the process gets it (the storage engine's already run), and threads made later
    inherit it. There is no way back without privileges: a child that must write at
    normal priority is a new child.
    """
    try:
        idle = os.sched_param(0)
        for thread in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setscheduler(int(thread), os.SCHED_IDLE, idle)
    except (AttributeError, OSError):
        os.nice(19)


def main() -> int:
    # Stop only when the gateway closes the pipe, after its last batch (see the docstring).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox = os.fdopen(os.dup(0), "rb")
    outbox = os.fdopen(os.dup(1), "wb")
    # Anything else printed goes to stderr, never into the frames.
    os.dup2(2, 1)
    settings: Settings
    idle: bool
    settings, idle = _read_frame(inbox)
    from .logs import configure_logging

    configure_logging(settings["log.level"], settings["log.format"])
    structlog.contextvars.bind_contextvars(process="writer")
    try:
        asyncio.run(_serve(settings, idle, inbox, outbox))
    except Exception:
        log.exception("writer.failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
