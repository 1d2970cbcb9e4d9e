"""Share-link lookups for the hot path: a bounded TTL cache in front of storage."""

from __future__ import annotations

from cachetools import TTLCache

from .store import Product, Store

__all__ = ["LinkCache"]

# Unknown codes are remembered briefly, so a scan of random codes can't hammer storage.
_MISSING_TTL = 5.0


class LinkCache:
    def __init__(self, store: Store, *, ttl: float, max_entries: int) -> None:
        self.store = store
        self._found: TTLCache[str, Product] = TTLCache(maxsize=max_entries, ttl=ttl)
        self._missing: TTLCache[str, bool] = TTLCache(maxsize=max_entries,
                                                      ttl=min(ttl, _MISSING_TTL))

    async def get(self, code: str) -> Product | None:
        product = self._found.get(code)
        if product is not None:
            return product
        if code in self._missing:
            return None
        product = await self.store.link(code)
        if product is None:
            self._missing[code] = True
        else:
            self._found[code] = product
        return product

    def forget(self, code: str | None) -> None:
        """A product changed (here or on another instance): the next read goes to storage.

        ``None`` forgets every link: changes may have been missed.
        """
        if code is None:
            self._found.clear()
            self._missing.clear()
        else:
            self._found.pop(code, None)
            self._missing.pop(code, None)
