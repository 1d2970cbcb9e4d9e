"""Counts kept in plain process memory, for ``GET /metrics`` (gateway/metrics.py) to read.

Nothing here is touched by a redirect on the share link: its requests are counted from the
recorder's own counters when metrics are read. What is counted here costs a dict update on
paths that already do far more (an API call, a landing page, an error page, a call to
WeChat or WeCom). No import of the Prometheus client: the share link's module imports this.
"""

from __future__ import annotations

import logging
import weakref
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = [
    "LATENCY_BOUNDS",
    "PLATFORM_CALLS",
    "PLATFORM_ERRORS",
    "REQUESTS",
    "SHARE_LATENCY",
    "SHARE_ROUTE",
    "TIMED_ROUTES",
    "LatencyTally",
    "ShareLinkCounts",
    "ShareLinkTimer",
    "timing_logger",
]

#: The share link's route, as requests are labelled by route template.
SHARE_ROUTE = "/p/{code}"

#: (route template, status) -> requests answered by this process. The share link's
#: redirects and pages are not here (gateway/metrics.py works them out).
REQUESTS: Counter[tuple[str, int]] = Counter()
#: (platform, api path) -> calls made to WeChat's or WeCom's server API.
PLATFORM_CALLS: Counter[tuple[str, str]] = Counter()
#: (platform, api path, kind) -> failed calls: ``transport`` (unreachable, timed out),
#: ``http`` (not a 200, or not a JSON object), ``errcode`` (the platform refused it).
PLATFORM_ERRORS: Counter[tuple[str, str, str]] = Counter()


@dataclass(slots=True)
class ShareLinkCounts:
    """What the share link counts of itself, off its redirect path."""

    #: Answers that were a page (a landing page, a bot's preview, a sale not open), not a
    #: redirect, by status.
    pages: Counter[int] = field(default_factory=Counter)
    #: Clicks on a retired link (counted, answered 410).
    gone: int = 0
    #: Requests that failed after their click was taken (a 5xx; the click still counts).
    failed_after_click: int = 0


#: Upper bounds (seconds) of the share link's latency histogram.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class LatencyTally:
    """A histogram kept as plain counts (one per bound, then +Inf) and a sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds


#: Share-link requests timed by this process, from request to response sent.
SHARE_LATENCY = LatencyTally()

#: The routes whose requests ShareLinkTimer times (the share link's, added by its module);
#: weak, so an app let go of (tests make many) goes with its routes.
TIMED_ROUTES: weakref.WeakSet[Any] = weakref.WeakSet()


class ShareLinkTimer(AbstractAccessLogger):
    """aiohttp's access-log hook, used to time share-link requests and write no log line.

    aiohttp takes the time when a request starts and calls ``log`` once its response is
    sent: the one way to see a request's whole latency without wrapping the handler. It
    costs each request two clock reads and this call (~0.5 us with its histogram observe,
    measured with timeit in 2026-12); the count of requests itself comes from the recorder
    (gateway/metrics.py).
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse,
            time: float) -> None:
        # A request aiohttp could not parse was routed nowhere: its ``match_info`` property
        # asserts, so the attribute behind it is read (None then).
        match = getattr(request, "_match_info", None)
        if match is not None and match.route in TIMED_ROUTES:
            SHARE_LATENCY.observe(time)


#: The logger aiohttp wants beside the class (it only checks there is one).
timing_logger = logging.getLogger("linkloop.timing")
