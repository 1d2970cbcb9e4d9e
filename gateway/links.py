"""Share-link lookups for the hot path: an in-memory map in front of storage.

The hot path must not wait on storage, so the map is warmed with the most recent links when
the gateway starts, and an entry past its TTL is still served while a background task reads
it again (stale-while-revalidate), together with every other entry that went stale
meanwhile: one read for them all, not a task and a read each. Only a code this process has
never seen waits for a read.
Changes made here, or heard from other instances (PostgreSQL NOTIFY), drop the entry at
once; the TTL bounds staleness when a notification can't arrive.

Each entry also carries a ``memo``: answers derived from the product (the share link keeps
its resolved storefronts there), dropped with the entry whenever the product changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Hashable
from typing import Any

import structlog

from .store import Product, Store

__all__ = ["CachedLink", "LinkCache"]

log = structlog.get_logger("linkloop.links")

# Unknown codes are re-read sooner, so a new link made elsewhere shows up quickly.
_MISSING_TTL = 5.0
# Stale codes gather this long before their re-read: with thousands of links going stale
# each minute, one query a moment instead of one per link.
_GATHER_SECONDS = 0.1
# Most codes re-read in one query. Links warmed together go stale together: a minute after
# start thousands are due at once, and turning rows into products takes the interpreter
# (on the loop itself with PostgreSQL), so the wave is read in short slices with requests
# answered between them: 500 rows at a time put 18 ms on the PostgreSQL p99.
_REFRESH_BATCH = 100
# Pause after a failed re-read: storage is away, the cache keeps serving what it has.
_RETRY_SECONDS = 1.0


class CachedLink:
    """One code's product (None: no such code), when it is due a re-read, and its memo.

    It also carries, copied out of the product, the few fields every click reads. With
    thousands of links in use, a click's link is cold in the CPU cache and each object it
    touches is a cache miss (the event loop spent ~10 us more per redirect on 10,000 links
    than on 100). Here those fields sit in this one object, and the merchant id is
    interned, so a merchant's links share one string that the last click kept warm.
    """

    __slots__ = ("due", "live", "memo", "merchant_id", "miniprogram", "product", "product_id",
                 "window")

    def __init__(self, product: Product | None, due: float,
                 memo: dict[Hashable, Any] | None = None) -> None:
        self.product = product
        self.due = due  # monotonic time
        #: Values computed from ``product``; they go when it does.
        self.memo: dict[Hashable, Any] = {} if memo is None else memo
        #: The link answers shoppers (False: unknown code or retired product).
        self.live = product is not None and not product.retired
        self.merchant_id = sys.intern(product.merchant_id) if product is not None else ""
        self.product_id = product.id if product is not None else 0
        #: The product has a WeChat mini-program target (a phone may get a minted link).
        self.miniprogram = product is not None and "wechat_miniprogram" in product.targets
        #: A live link's sales window, (valid_from, valid_until) with None for an open end;
        #: None when it has none (nearly all links): then a click never looks at the clock
        #: for it.
        self.window = (
            (product.valid_from, product.valid_until)
            if self.live and product is not None
            and (product.valid_from is not None or product.valid_until is not None) else None)


class LinkCache:
    def __init__(self, store: Store, *, ttl: float, max_entries: int) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        #: Code -> entry. The share link reads it directly, and calls ``lookup`` only for a
        #: code it lacks or an entry past its ``due`` time. Cleared, never replaced.
        self.entries: dict[str, CachedLink] = {}
        self._stale: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        # Codes forgotten while a re-read was in flight (None: all of them).
        self._forgotten: set[str | None] = set()

    async def warm(self) -> int:
        """Load the most recently changed links (up to ``max_entries``).

        Each is dated as if read at a random moment of the last TTL: loaded together, they
        would all go stale in the same second, and a wave of thousands of re-reads took a
        third off the share link's throughput while it lasted. Spread out, they come due a
        few at a time, and stay spread (each is re-read when it comes due).
        """
        now = time.monotonic()
        products = await self.store.recent_links(self.max_entries)
        for product in products:
            self.entries[product.code] = CachedLink(product,
                                                     now + self.ttl - random.uniform(0, self.ttl))
        return len(products)

    def lookup(self, code: str) -> CachedLink | None:
        """The cached entry, without waiting (None: never read, ``load`` it).

        The share link's path: a plain call, no coroutine. A stale entry is still returned,
        and queued for the background re-read.
        """
        entry = self.entries.get(code)
        if entry is not None and time.monotonic() > entry.due:
            self._stale.add(code)
            if self._refresher is None:
                self._refresher = asyncio.get_running_loop().create_task(
                    self._refresh_stale(), name="linkloop-links-refresh")
        return entry

    async def load(self, code: str) -> CachedLink:
        """Read a code this cache has not seen, and keep the answer."""
        return self._put(code, await self.store.link(code))

    async def get(self, code: str) -> Product | None:
        entry = self.lookup(code)
        if entry is None:
            entry = await self.load(code)
        return entry.product

    def _put(self, code: str, product: Product | None) -> CachedLink:
        entries = self.entries
        old = entries.get(code)
        if old is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # oldest first: cheap, and good enough here
        # A re-read that finds the same version keeps what was derived from it.
        memo = (old.memo if old is not None and product is not None and old.product is not None
                and old.product.updated_at == product.updated_at else None)
        entry = entries[code] = CachedLink(
            product, time.monotonic() + (self.ttl if product is not None else _MISSING_TTL), memo)
        return entry

    async def _refresh_stale(self) -> None:
        """Re-read the stale entries, a batch at a time, until none is left."""
        try:
            while self._stale:
                # Let a moment's stale codes gather, unless a wave is already waiting.
                await asyncio.sleep(_GATHER_SECONDS if len(self._stale) < _REFRESH_BATCH
                                    else 0)
                codes = [self._stale.pop() for _ in range(min(len(self._stale),
                                                              _REFRESH_BATCH))]
                self._forgotten.clear()
                try:
                    found = await self.store.links(codes)
                except Exception as exc:  # storage away: keep serving what we have
                    log.warning("links.refresh_failed", codes=len(codes), error=str(exc))
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue  # still stale: the next requests for them ask again
                if None in self._forgotten:
                    continue
                for code in codes:
                    if code not in self._forgotten:
                        self._put(code, found.get(code))
        finally:
            self._refresher = None

    def forget(self, code: str | None) -> None:
        """A product changed (here or on another instance): the next read goes to storage.

        ``None`` forgets every link: changes may have been missed.
        """
        if code is None:
            self.entries.clear()
        else:
            self.entries.pop(code, None)
        if self._refresher is not None:
            # A re-read in flight may have read the old row: it must not put it back.
            self._forgotten.add(code)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
