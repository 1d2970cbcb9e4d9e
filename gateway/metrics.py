"""``GET /metrics``: Prometheus metrics, readable with an ``admin`` token.

What is measured, and what it costs the share link (the hot path):

- requests by route and status: every route but the share link counts itself in its error
  wrapper (gateway/errors.py ``guarded``); the share link counts only its rare answers (a
  gone link, an error). Its redirects and pages are worked out here, when metrics are read,
  from counters that exist anyway: every click the recorder took was answered with a page
  (counted on the page path), a retired link's page or an error after the click (both
  counted), or else a redirect;
- the share link's latency: aiohttp's access-log hook times each share-link request
  (gateway/tally.py ``ShareLinkTimer``, about a microsecond a request);
- clicks taken, written, journaled and dropped, the queue in memory, how long its oldest
  row has waited (writer lag) and the journal's size: the recorder's own counters, read
  here; the recorder counts clicks per batch, never per click;
- WeChat and WeCom API calls and their failures: counted where every call is made
  (gateway/platform_api.py).

So nothing here runs per click: counts live in plain process memory and are copied into
the Prometheus client's metrics (by the difference since the last copy) when metrics are
read, and once a second under ``serve --workers N``. There, every worker writes its
metrics where the Prometheus client's multiprocess mode keeps them (the directory
``PROMETHEUS_MULTIPROC_DIR``, which the supervisor makes fresh for each run), and whichever
worker answers ``/metrics`` sums them all; a worker's figures are at most a second old.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .appkeys import RECORDER, SETTINGS, SHARE_LINK_COUNTS
from .errors import ApiError, guarded
from .tally import (
    LATENCY_BOUNDS,
    PLATFORM_CALLS,
    PLATFORM_ERRORS,
    REQUESTS,
    SHARE_LATENCY,
    SHARE_ROUTE,
)

__all__ = ["MULTIPROC_ENV", "metrics_ctx", "setup_routes"]

#: Where the Prometheus client's multiprocess mode keeps every process's values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often a worker of ``serve --workers N`` copies its counts for the others to read.
SYNC_EVERY = 1.0


@dataclass(slots=True)
class _App:
    """One app in this process whose recorder and share link are counted."""

    number: int
    app: web.Application


class _Metrics:
    """This process's metrics (one set per process, as multiprocess mode requires)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in files and a fresh registry reads them all.
        into = None if self.multiprocess else self.registry
        self.requests = Counter(
            "linkloop_http_requests", "Requests answered, by route template and status.",
            ["route", "status"], registry=into)
        self.clicks = Counter(
            "linkloop_clicks", "Share-link clicks: taken (by the recorder), written (to "
            "storage, journal replays included), journaled (to disk while storage was slow "
            "or away), dropped (lost: neither storage, journal nor memory took them).",
            ["outcome"], registry=into)
        self.queue_depth = Gauge(
            "linkloop_recorder_queue_depth", "Clicks and events in memory awaiting a write.",
            registry=into, multiprocess_mode="livesum")
        self.writer_lag = Gauge(
            "linkloop_writer_lag_seconds",
            "How long the oldest click or event in memory has waited to be written.",
            registry=into, multiprocess_mode="livemax")
        self.journal_bytes = Gauge(
            "linkloop_journal_bytes", "Bytes of clicks in the journal awaiting replay.",
            registry=into, multiprocess_mode="livemax")
        self.latency = Histogram(
            "linkloop_share_link_seconds",
            "Share-link requests, from the request to its response sent.",
            buckets=LATENCY_BOUNDS, registry=into)
        self.api_calls = Counter(
            "linkloop_platform_api_calls", "Calls made to WeChat's and WeCom's server APIs.",
            ["platform", "api"], registry=into)
        self.api_errors = Counter(
            "linkloop_platform_api_errors", "Failed calls to WeChat's and WeCom's server "
            "APIs: transport (unreachable, timed out), http (not a 200 with a JSON object), "
            "errcode (refused).", ["platform", "api", "kind"], registry=into)
        self._apps: list[_App] = []
        self._numbers = itertools.count()
        self._pushed: dict[Hashable, float] = {}

    # --- copying counts in --------------------------------------------------------------------
    def attach(self, app: web.Application) -> _App:
        source = _App(next(self._numbers), app)
        self._apps.append(source)
        return source

    def detach(self, source: _App) -> None:
        """The app stops: its last counts copied, then no more."""
        self.sync()
        self._apps.remove(source)
        if self.multiprocess and not self._apps:
            # This process's live gauges go with it; its counters stay in the totals.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _push(self, key: Hashable, counter: Any, total: float) -> None:
        """Bring a counter up to ``total`` (a count kept elsewhere since it began)."""
        delta = total - self._pushed.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._pushed[key] = total

    def sync(self) -> None:
        """Copy every count of this process into the Prometheus client's metrics."""
        for (route, status), count in list(REQUESTS.items()):
            self._push(("requests", route, status), self.requests.labels(route, str(status)),
                       count)
        for (platform, api), count in list(PLATFORM_CALLS.items()):
            self._push(("calls", platform, api), self.api_calls.labels(platform, api), count)
        for (platform, api, kind), count in list(PLATFORM_ERRORS.items()):
            self._push(("errors", platform, api, kind),
                       self.api_errors.labels(platform, api, kind), count)
        self._sync_latency()
        depth, lag, journal = 0, 0.0, 0
        now = time.time()
        for source in self._apps:
            app = source.app
            recorder = app.get(RECORDER)
            if recorder is None:  # starting, or failed to start
                continue
            counts = app[SHARE_LINK_COUNTS]
            taken = recorder.clicks_taken
            for outcome, total in (("taken", taken), ("written", recorder.clicks_written),
                                   ("journaled", recorder.clicks_journaled),
                                   ("dropped", recorder.clicks_dropped)):
                self._push(("clicks", source.number, outcome), self.clicks.labels(outcome),
                           total)
            # Every click taken got a page, a "gone", an error after it, or else a redirect.
            pages = dict(counts.pages)
            redirects = taken - sum(pages.values()) - counts.gone - counts.failed_after_click
            self._push(("share", source.number, 302),
                       self.requests.labels(SHARE_ROUTE, "302"), redirects)
            for status, total in pages.items():
                self._push(("share", source.number, status),
                           self.requests.labels(SHARE_ROUTE, str(status)), total)
            depth += recorder.pending
            oldest = recorder.oldest_pending
            if oldest is not None:
                lag = max(lag, now - oldest)
            journal = max(journal, _journal_bytes(app[SETTINGS].data_dir / "journal"))
        self.queue_depth.set(depth)
        self.writer_lag.set(lag)
        self.journal_bytes.set(journal)

    def _sync_latency(self) -> None:
        # Whole buckets at a time: Histogram.observe() takes one value, and calling it per
        # request is the cost this design avoids. Its buckets (one count each, then +Inf)
        # and sum are the Prometheus client's own values, in single and multiprocess mode
        # alike; tests/test_metrics.py reads the histogram back, so a change there shows.
        buckets = self.latency._buckets
        for index, total in enumerate(SHARE_LATENCY.counts):
            self._push(("latency", index), buckets[index], total)
        self._push(("latency", "sum"), self.latency._sum, SHARE_LATENCY.total)

    # --- reading them out ---------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The text every process's metrics make together (blocking: files in multiprocess)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _journal_bytes(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for path in directory.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError):  # replayed and removed meanwhile
                total += path.stat().st_size
    return total


_METRICS: _Metrics | None = None


def _metrics() -> _Metrics:
    """This process's metrics, made on first use (after the supervisor set the directory)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Counts this app's recorder and share link. First in cleanup_ctx, so that the last
    copy, on the way out, comes after the recorder has written everything."""
    metrics = _metrics()
    source = metrics.attach(app)
    task = asyncio.create_task(_sync_forever(metrics)) if metrics.multiprocess else None
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    metrics.detach(source)


async def _sync_forever(metrics: _Metrics) -> None:
    while True:
        await asyncio.sleep(SYNC_EVERY)
        metrics.sync()


async def metrics_page(request: web.Request) -> web.Response:
    from .api import principal

    if principal(request).role != "admin":
        raise ApiError(403, "forbidden", "metrics are for admin tokens")
    metrics = _metrics()
    metrics.sync()
    body = await asyncio.to_thread(metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", guarded(metrics_page))
