"""Retention and privacy (China's PIPL): raw rows are kept only as long as they are needed.

A click is stored raw (its visitor cookie id, salted address hash, platform, channel) so
that it can be counted, deduplicated and joined to the WeCom add that follows it. Once
counted, the per-day rollups hold everything the reports show; the raw rows are personal
information with no further use. So clicks, the events after them, the daily visitor rows
and worked WeCom callbacks older than ``retention.raw_clicks_days`` are deleted: by a
running gateway once a day (one process per host does it, one at a time on PostgreSQL),
or at once with ``linkloop prune``. The rollups keep every count.

``linkloop privacy forget --visitor ID`` deletes one visitor's raw rows now (a request
under PIPL article 47); the counts they were part of stay, as anonymous sums.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from .appkeys import CLOCK, SETTINGS, STORE, WORKER
from .clock import DayClock
from .settings import Settings
from .store import Store

__all__ = ["prune", "prune_daily", "retention_cutoff"]

log = structlog.get_logger("linkloop.retention")

#: How often a running gateway prunes, and how soon it tries again after a failure.
PRUNE_EVERY = 24 * 3600.0
RETRY_AFTER = 3600.0


def retention_cutoff(settings: Settings, clock: DayClock) -> tuple[str, float] | None:
    """(the first day kept, the earliest moment kept), or None when raw rows are kept for
    ever (``retention.raw_clicks_days = 0``). Days are in ``stats.timezone``, as clicks'."""
    days: int = settings["retention.raw_clicks_days"]
    if days == 0:
        return None
    return ((clock.today() - timedelta(days=days)).isoformat(), time.time() - days * 86400)


async def prune(store: Store, settings: Settings, clock: DayClock) -> dict[str, Any]:
    """Delete the raw rows older than the retention now; what went, as JSON."""
    cutoff = retention_cutoff(settings, clock)
    if cutoff is None:
        return {"retention_days": 0, "kept_from": None}
    before_day, before_ts = cutoff
    counts = await store.prune_raw(before_day=before_day, before_ts=before_ts)
    return {"retention_days": settings["retention.raw_clicks_days"], "kept_from": before_day,
            **counts}


async def prune_daily(app: web.Application) -> AsyncIterator[None]:
    """The running gateway's daily prune (cleanup_ctx): the first one soon after start-up,
    in the background. ``serve --workers N`` prunes from its first process only."""
    task = None
    if app[WORKER] == 0 and app[SETTINGS]["retention.raw_clicks_days"]:
        task = asyncio.create_task(_prune_forever(app), name="linkloop-retention")
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _prune_forever(app: web.Application) -> None:
    while True:
        try:
            done = await prune(app[STORE], app[SETTINGS], app[CLOCK])
        except Exception as exc:  # storage away: try again later, never die
            log.warning("retention.prune_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(RETRY_AFTER)
            continue
        log.info("retention.pruned", **done)
        await asyncio.sleep(PRUNE_EVERY)
