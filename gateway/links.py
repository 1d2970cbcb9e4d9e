"""Share-link lookups for the hot path: an in-memory map in front of storage.

The hot path must not wait on storage, so the map is warmed with the most recent links when
the gateway starts, and an entry past its TTL is still served while a background task reads
it again (stale-while-revalidate). Only a code this process has never seen waits for a read.
Changes made here, or heard from other instances (PostgreSQL NOTIFY), drop the entry at
once; the TTL bounds staleness when a notification can't arrive.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from .store import Product, Store

__all__ = ["LinkCache"]

log = structlog.get_logger("linkloop.links")

# Unknown codes are re-read sooner, so a new link made elsewhere shows up quickly.
_MISSING_TTL = 5.0


class LinkCache:
    def __init__(self, store: Store, *, ttl: float, max_entries: int) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        # code -> (product or None for "no such code", monotonic time it was read)
        self._entries: dict[str, tuple[Product | None, float]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def warm(self) -> int:
        """Load the most recently changed links (up to ``max_entries``)."""
        now = time.monotonic()
        products = await self.store.recent_links(self.max_entries)
        for product in products:
            self._entries[product.code] = (product, now)
        return len(products)

    async def get(self, code: str) -> Product | None:
        entry = self._entries.get(code)
        if entry is None:
            product = await self.store.link(code)
            self._put(code, product)
            return product
        product, read_at = entry
        age = time.monotonic() - read_at
        if age > (self.ttl if product is not None else _MISSING_TTL):
            self._refresh(code)
        return product

    def _put(self, code: str, product: Product | None) -> None:
        entries = self._entries
        if code not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # oldest first: cheap, and good enough here
        entries[code] = (product, time.monotonic())

    def _refresh(self, code: str) -> None:
        if code in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._reread(code))
        self._refreshing[code] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(code, None))

    async def _reread(self, code: str) -> None:
        try:
            self._put(code, await self.store.link(code))
        except Exception as exc:  # storage away: keep serving what we have
            log.warning("links.refresh_failed", code=code, error=str(exc))

    def forget(self, code: str | None) -> None:
        """A product changed (here or on another instance): the next read goes to storage.

        ``None`` forgets every link: changes may have been missed.
        """
        if code is None:
            self._entries.clear()
        else:
            self._entries.pop(code, None)

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)
