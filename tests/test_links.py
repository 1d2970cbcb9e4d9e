"""The link cache: junk codes cost no storage read and no unbounded memory, and a lost
notification channel never takes a cached link away."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.appkeys import LINKS
from gateway.links import LinkCache
from gateway.store import Merchant, Product
from gateway.store.sqlite import SQLiteStore

from .conftest import TAOBAO_UA, Tenant, create_product


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the link reads reaching it."""

    reads = 0

    async def link(self, code: str) -> Product | None:
        self.reads += 1
        return await super().link(code)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    """Two merchants with a product each: codes ``acme-tea`` and ``bolt-tea``."""
    opened = await CountingStore.open(tmp_path / "links.db")
    for merchant in ("acme", "bolt"):
        await opened.create_merchant(Merchant(merchant, merchant.title()))
        await opened.create_product(merchant, code=f"{merchant}-tea", title="Tea",
                                    targets={"taobao": {"item_id": "600000000001"}},
                                    image_url=None, price=None)
    yield opened
    await opened.close()


def _junk(n: int) -> str:
    """A code shaped like a share code (the longest kind) that no link has."""
    return f"{n:064d}"


async def test_a_code_longer_than_any_share_code_is_unknown_without_a_read(
    store: CountingStore,
) -> None:
    cache = LinkCache(store, ttl=60, max_entries=100)
    for code in ("a" * 65, "x" * 8192, "tea/../etc", "tea%00", "_leading"):
        assert (await cache.load(code)).product is None
        assert cache.lookup(code) is None  # nor is it remembered
    assert store.reads == 0
    assert (await cache.load(_junk(1))).product is None  # a code that could exist is read
    assert store.reads == 1


async def test_junk_codes_neither_grow_memory_past_the_bound_nor_evict_a_real_link(
    store: CountingStore,
) -> None:
    bound = 500
    cache = LinkCache(store, ttl=60, max_entries=2, missing_max=bound)
    for merchant in ("acme", "bolt"):
        assert (await cache.load(f"{merchant}-tea")).live
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(9 * bound):
            assert not (await cache.load(_junk(n))).live
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~340 bytes an unknown code (its 64 characters and the cache's bookkeeping), and
    # nothing for the ones pushed out: 4,500 of them kept would be ~1.5 MB.
    assert grown < bound * 400, f"{grown} bytes for {9 * bound} junk codes"
    # The real links are where they were: a click on either needs no read.
    reads = store.reads
    for merchant in ("acme", "bolt"):
        entry = cache.lookup(f"{merchant}-tea")
        assert entry is not None and entry.live and entry.merchant_id == merchant
    assert store.reads == reads
    assert len(cache.missing) == bound  # the latest junk, for its few seconds


async def test_a_missed_notification_marks_links_due_and_keeps_them(
    store: CountingStore,
) -> None:
    cache = LinkCache(store, ttl=60, max_entries=100)
    for merchant in ("acme", "bolt"):
        await cache.load(f"{merchant}-tea")
    await cache.load(_junk(1))
    cache.forget(None)  # the notification channel came back: changes may have been missed
    for merchant in ("acme", "bolt"):
        entry = cache.entries[f"{merchant}-tea"]  # still served while it is re-read
        assert entry.live and entry.due <= time.monotonic() + 10
    assert cache.lookup(_junk(1)) is None  # an unknown code is asked again
    await cache.close()


async def test_the_share_link_turns_away_impossible_codes_from_memory(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    assert client.app is not None
    cache = client.app[LINKS]
    for code in ("a" * 65, "x" * 4000):
        resp = await client.get(f"/p/{code}", headers={"User-Agent": TAOBAO_UA})
        assert resp.status == 404
        assert "链接不存在" in await resp.text()
    assert [code for code in cache.entries if len(code) > 64] == []  # nothing remembered
    assert len(cache.missing) == 0
    resp = await client.get(f"/p/{product['code']}", headers={"User-Agent": TAOBAO_UA},
                            allow_redirects=False)
    assert resp.status == 302
