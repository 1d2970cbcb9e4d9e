"""Storage going away under a real gateway: links keep answering, no click is lost unseen.

PostgreSQL is reached through a TCP proxy the test controls (tests/tcp_proxy.py), so it
can be cut or made to swallow every packet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app

from .conftest import (
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)
from .pg import fresh_schema, postgres_url, with_schema
from .tcp_proxy import TcpProxy, tcp_proxy

#: How long each outage lasts (issue 13: "cut for 20 s").
OUTAGE_SECONDS = 20.0


@pytest.fixture
async def pg_behind_proxy() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test PostgreSQL, and a storage.url (fresh schema) through it."""
    url = postgres_url()
    server = urlsplit(url)
    async with tcp_proxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy, \
            fresh_schema(url, create=False) as schema:
        through = server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}")
        yield proxy, with_schema(through.geturl(), schema)


async def _shop(client: TestClient[Any, Any]) -> list[tuple[Tenant, dict[str, Any]]]:
    """Two merchants with a product each."""
    shops = []
    for merchant in ("acme", "bolt"):
        tenant = await add_tenant(client, merchant)
        shops.append((tenant, await create_product(client, tenant)))
    return shops


async def _tap(client: TestClient[Any, Any], product: dict[str, Any]) -> int:
    async with client.get(f"/p/{product['code']}", headers={"User-Agent": TAOBAO_UA},
                          allow_redirects=False) as resp:
        return resp.status


async def _clicks(client: TestClient[Any, Any], tenant: Tenant) -> int | None:
    """The merchant's clicks in the stats, or None while the stats can't be read."""
    async with client.get("/api/stats?by=platform", headers=tenant.auth) as resp:
        if resp.status != 200:
            return None
        return sum(row["clicks"] for row in (await resp.json())["rows"])


async def _all_counted(client: TestClient[Any, Any], answered: dict[str, int],
                       shops: list[tuple[Tenant, dict[str, Any]]], within: float) -> None:
    """Poll the stats until every answered click is in them, each merchant's in its own."""
    deadline = time.monotonic() + within
    while True:
        counted = {tenant.id: await _clicks(client, tenant) for tenant, _ in shops}
        if counted == answered:
            return
        assert time.monotonic() < deadline, f"answered {answered}, counted {counted}"
        await asyncio.sleep(0.2)


async def _readyz(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    async with client.get("/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_a_cached_link_answers_through_a_postgres_cut_and_every_click_counts(
    aiohttp_client: ClientFactory, tmp_path: Path, pg_behind_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, url = pg_behind_proxy
    # A one-second TTL: through the cut every cached link is also past its freshness, so
    # it is served stale (stale-if-error), not merely unexpired.
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, storage__url=url, cache__link_ttl_seconds=1, storage__timeout_seconds=2,
        recorder__retry_max_seconds=1)))
    shops = await _shop(client)
    answered = {tenant.id: 0 for tenant, _ in shops}
    for tenant, product in shops:  # each link is read once, and so cached
        assert await _tap(client, product) == 302
        answered[tenant.id] += 1

    proxy.cut()
    started = time.monotonic()
    ready_during_cut = set()
    while (elapsed := time.monotonic() - started) < OUTAGE_SECONDS:
        for tenant, product in shops:
            status = await _tap(client, product)
            assert status == 302, f"{elapsed:.1f} s into the cut, {product['code']}: {status}"
            answered[tenant.id] += 1
        ready_during_cut.add((await _readyz(client))[0])
        await asyncio.sleep(0.05)
    proxy.forward()

    assert 503 in ready_during_cut  # the operator still sees that storage is away
    await _all_counted(client, answered, shops, within=30)


async def test_readyz_says_not_ready_within_the_storage_timeout_when_packets_vanish(
    aiohttp_client: ClientFactory, tmp_path: Path, pg_behind_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, url = pg_behind_proxy
    timeout = 1.0
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, storage__url=url, storage__timeout_seconds=timeout)))
    shops = await _shop(client)
    for _, product in shops:
        assert await _tap(client, product) == 302
    assert (await _readyz(client))[0] == 200

    proxy.black_hole()
    # Within the timeout (and some slack for a busy machine), not whenever TCP gives up.
    status, body = await asyncio.wait_for(_readyz(client), timeout + 4)
    assert (status, body["status"], body["storage"]) == (503, "unavailable", "down")
    for _, product in shops:  # the links it has cached still answer meanwhile
        assert await asyncio.wait_for(_tap(client, product), timeout + 4) == 302

    proxy.forward()
    deadline = time.monotonic() + 20
    while (await _readyz(client))[0] != 200:
        assert time.monotonic() < deadline, "storage never came back"
        await asyncio.sleep(0.1)
    answered = {tenant.id: 2 for tenant, _ in shops}
    await _all_counted(client, answered, shops, within=30)
