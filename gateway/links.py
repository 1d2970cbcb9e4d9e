"""Share-link lookups for the hot path: an in-memory map in front of storage.

The hot path must not wait on storage, so the map is warmed with the most recent links when
the gateway starts, and an entry past its TTL is still served while a background task reads
it again (stale-while-revalidate), together with every other entry that went stale
meanwhile: one read for them all, not a task and a read each. Only a code this process has
never seen waits for a read.
Changes made here, or heard from other instances (PostgreSQL NOTIFY), drop the entry at
once; the TTL bounds staleness when a notification can't arrive.

Storage going away never takes a link from a shopper: an entry is dropped only when its
product changed, never because storage or the notification channel failed. A failed re-read
leaves the entry as it was (stale-if-error), and a channel that comes back after missing
changes marks every entry due for a re-read instead of emptying the cache.

Unknown codes are remembered apart from real links, in a small cache bounded in count
(and so in bytes: a code longer than any share code is turned away before any lookup), so
junk requests can neither grow memory nor push a real link out.

Each entry also carries a ``memo``: answers derived from the product (the share link keeps
its resolved storefronts there), dropped with the entry whenever the product changes; and,
for a product with a WeChat mini-program target, the links minted for it (URL Link, scheme,
mini-program code: gateway/wechat/links.py), read with the product by ``minted_loader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

import structlog
from cachetools import TTLCache

from .ids import CODE_PATTERN
from .store import Product, Store
from .trouble import Trouble

__all__ = ["CachedLink", "LinkCache", "MintedLoader"]

#: Reads what was minted for share codes: code -> {link key: value} (see gateway/resolve.py).
MintedLoader = Callable[[Sequence[str]], Awaitable[Mapping[str, Mapping[str, str]]]]
_NONE: Mapping[str, str] = {}

log = structlog.get_logger("linkloop.links")

# Unknown codes are re-read sooner, so a new link made elsewhere shows up quickly.
_MISSING_TTL = 5.0
# Most unknown codes remembered. Each is at most CODE_PATTERN's 64 characters, ~340 bytes
# with the cache's bookkeeping (measured), so the negative cache stays under ~3.5 MB
# however many junk codes arrive.
_MISSING_MAX = 10_000
# After the notification channel missed changes, every entry comes due within this long:
# spread, so that a reconnect does not turn into one wave of re-reads.
_RESYNC_SPREAD = 10.0
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

    __slots__ = ("due", "live", "memo", "merchant_id", "miniprogram", "minted", "product",
                 "product_id", "window")

    def __init__(self, product: Product | None, due: float,
                 memo: dict[Hashable, Any] | None = None,
                 minted: Mapping[str, str] = _NONE) -> None:
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
        #: What was minted for it: the resolver's ``links`` (empty for most products).
        self.minted = minted
        #: A live link's sales window, (valid_from, valid_until) with None for an open end;
        #: None when it has none (nearly all links): then a click never looks at the clock
        #: for it.
        self.window = (
            (product.valid_from, product.valid_until)
            if self.live and product is not None
            and (product.valid_from is not None or product.valid_until is not None) else None)


#: The answer for a code no link has: a 404, from memory.
_UNKNOWN = CachedLink(None, float("inf"))


class LinkCache:
    def __init__(self, store: Store, *, ttl: float, max_entries: int,
                 missing_max: int = _MISSING_MAX,
                 minted_loader: MintedLoader | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self.minted_loader = minted_loader
        #: Code -> entry of a code that has a product (active or retired), read through
        #: ``lookup``. Never replaced.
        self.entries: dict[str, CachedLink] = {}
        #: Codes storage had no product for, each remembered for ``_MISSING_TTL``.
        self.missing: TTLCache[str, CachedLink] = TTLCache(missing_max, _MISSING_TTL)
        self._stale: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        #: Re-reads failing (storage away): said once, not once a retry (trouble.py).
        self._refresh_trouble = Trouble(log, "links.refresh_failed", "links.refresh_back")
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
        minted = await self._minted(products)
        for product in products:
            self.entries[product.code] = CachedLink(
                product, now + self.ttl - random.uniform(0, self.ttl),
                minted=minted.get(product.code, _NONE))
        return len(products)

    async def _minted(self, products: Sequence[Product | None],
                      ) -> Mapping[str, Mapping[str, str]]:
        """What was minted for those of ``products`` with a mini-program target."""
        codes = [p.code for p in products if p is not None and "wechat_miniprogram" in p.targets]
        if not codes or self.minted_loader is None:
            return {}
        return await self.minted_loader(codes)

    def lookup(self, code: str) -> CachedLink | None:
        """The cached entry, without waiting (None: never read, ``load`` it).

        The share link's path: a plain call, no coroutine. A stale entry is still returned,
        and queued for the background re-read.
        """
        entry = self.entries.get(code)
        if entry is None:
            return self.missing.get(code)
        if time.monotonic() > entry.due:
            self._stale.add(code)
            if self._refresher is None:
                self._refresher = asyncio.get_running_loop().create_task(
                    self._refresh_stale(), name="linkloop-links-refresh")
        return entry

    async def load(self, code: str) -> CachedLink:
        """Read a code this cache has not seen, and keep the answer.

        A code no share link could have (too long, or characters no code has) is unknown
        without asking storage, and is not remembered: it costs neither a read nor memory.
        """
        if CODE_PATTERN.fullmatch(code) is None:
            return _UNKNOWN
        product = await self.store.link(code)
        minted = await self._minted([product])
        return self._put(code, product, minted.get(code, _NONE))

    async def get(self, code: str) -> Product | None:
        entry = self.lookup(code)
        if entry is None:
            entry = await self.load(code)
        return entry.product

    def _put(self, code: str, product: Product | None,
             minted: Mapping[str, str] = _NONE) -> CachedLink:
        entries = self.entries
        if product is None:  # remembered apart: an unknown code never evicts a real link
            entries.pop(code, None)
            self.missing[code] = _UNKNOWN
            return _UNKNOWN
        self.missing.pop(code, None)
        old = entries.get(code)
        if old is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # oldest first: cheap, and good enough here
        # A re-read that finds the same version (and minted links) keeps what was derived.
        memo = (old.memo if old is not None and old.product is not None
                and old.product.updated_at == product.updated_at and old.minted == minted
                else None)
        entry = entries[code] = CachedLink(product, time.monotonic() + self.ttl, memo, minted)
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
                    minted = await self._minted(list(found.values()))
                except Exception as exc:  # storage away: keep serving what we have
                    self._refresh_trouble.failed(codes=len(codes), error=str(exc))
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue  # still stale: the next requests for them ask again
                self._refresh_trouble.ok()
                if None in self._forgotten:
                    continue
                for code in codes:
                    if code not in self._forgotten:
                        self._put(code, found.get(code), minted.get(code, _NONE))
        finally:
            self._refresher = None

    def forget(self, code: str | None) -> None:
        """A product changed (here or on another instance): the next read goes to storage.

        ``None``: changes may have been missed (the notification channel was lost and is
        back). Every link is then due for a re-read, none is dropped: if storage is away
        again, the share link still answers from what it has.
        """
        if code is None:
            self._resync()
        else:
            self.entries.pop(code, None)
            self.missing.pop(code, None)
        if self._refresher is not None:
            # A re-read in flight may have read the old row: it must not put it back.
            self._forgotten.add(code)

    def _resync(self) -> None:
        """Every entry due for a re-read within ``_RESYNC_SPREAD`` seconds; the unknown
        codes forgotten (a link may have been made meanwhile)."""
        now = time.monotonic()
        spread = min(self.ttl, _RESYNC_SPREAD)
        for entry in self.entries.values():
            due = now + random.random() * spread
            if due < entry.due:
                entry.due = due
        self.missing.clear()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
