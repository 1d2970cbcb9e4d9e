"""Polling to a deadline: how a test waits for something that happens in the background.

A fixed sleep before an assert is a guess at how long a busy machine takes: too short and
the test fails on a slow CI run, too long and every run pays for it. ``until`` asks again
and again, returns as soon as the answer is yes, and fails with the last answer it saw
when the deadline passes. The deadline is generous on purpose: it bounds a hang, it is not
a claim about speed (timings belong to bench/).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEADLINE", "until", "until_sync"]

T = TypeVar("T")

#: Seconds a test waits for background work before calling it stuck. A mutation run may
#: shorten it (``LINKLOOP_TEST_DEADLINE``): there a mutant that stops the work fails the
#: test by waiting it out, hundreds of times over.
DEADLINE = float(os.environ.get("LINKLOOP_TEST_DEADLINE", "20"))


async def until(predicate: Callable[[], T | Awaitable[T]], *, within: float = DEADLINE,
                interval: float = 0.02, what: str = "") -> T:
    """Call ``predicate`` (sync or async) until it returns something truthy; return that.

    Fails the test with ``what`` and the last value seen once ``within`` seconds pass.
    """
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what or predicate!r} "
                                 f"(last: {value!r})")
        await asyncio.sleep(interval)


def until_sync(predicate: Callable[[], T], *, within: float = DEADLINE,
               interval: float = 0.05, what: str = "") -> T:
    """``until`` for tests that drive real processes from plain (blocking) code."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what or predicate!r} "
                                 f"(last: {value!r})")
        time.sleep(interval)
