"""Storage going away under a real gateway: links keep answering, no click is lost unseen.

PostgreSQL is reached through a TCP proxy the test controls (tests/tcp_proxy.py), so it
can be cut or made to swallow every packet; SQLite is locked by another connection, and
the journal's directory replaced by a plain file (the tests run as root, so a read-only
mode would not stop anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CALLBACKS, RECORDER, STORE
from gateway.store import StoreUnavailable
from gateway.store.postgres import quote_ident

from .conftest import (
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)
from .fake_wecom import FakeWeCom
from .pg import connect, fresh_schema, postgres_url, with_schema
from .tcp_proxy import TcpProxy, tcp_proxy
from .wait import until

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


@contextlib.asynccontextmanager
async def _pg_gateway(aiohttp_client: ClientFactory, tmp_path: Path, **settings: Any,
                      ) -> AsyncIterator[tuple[TestClient[Any, Any], str, str]]:
    """A gateway straight on a fresh PostgreSQL schema (storage.timeout_seconds 1); the
    server's URL and the schema, for another session to hold a table (``_held``)."""
    url = postgres_url()
    async with fresh_schema(url, create=False) as schema:
        yield await aiohttp_client(create_app(make_settings(
            tmp_path, storage__url=with_schema(url, schema), storage__timeout_seconds=1,
            **settings))), url, schema


@contextlib.asynccontextmanager
async def _held(url: str, schema: str, table: str) -> AsyncIterator[None]:
    """``table`` held by another session (a migration, a long transaction) while the block
    runs: reads and pings go on, every write to it waits out storage.timeout_seconds."""
    holder = await connect(url)
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {quote_ident(schema)}.{table} IN EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def test_a_cached_link_answers_through_a_postgres_cut_and_every_click_counts(
    aiohttp_client: ClientFactory, tmp_path: Path, pg_behind_proxy: tuple[TcpProxy, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.logs import configure_logging

    configure_logging("info", "json")
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

    # The operator still sees that storage is away: /readyz says so within
    # storage.timeout_seconds (2 s here), and the cut lasts ten times that.
    assert 503 in ready_during_cut
    await _all_counted(client, answered, shops, within=30)
    # An outage is a warning that says what is away, not an error with a traceback; and
    # it is said when it starts and when it ends, not on every retry of the stale links'
    # re-read (each second), the callback worker's (5 s) or /readyz's (each probe).
    said: list[str] = []

    def heard(event: str) -> bool:
        out = capsys.readouterr()
        said.extend(line for line in (out.out + out.err).splitlines() if line.startswith("{"))
        return any(json.loads(line)["event"] == event for line in said)

    assert client.app is not None
    client.app[CALLBACKS].wake()  # its next look at the inbox, without waiting 5 s
    await until(lambda: heard("callback.storage_back"), what="the callback worker back")
    assert (await _readyz(client))[0] == 200
    await until(lambda: heard("readyz.storage_back"), what="/readyz said storage is back")
    for _, product in shops:  # stale links, read again now that storage answers
        assert await _tap(client, product) == 302
    await until(lambda: heard("links.refresh_back"), what="the links' re-read back")
    assert not any("Traceback" in line for line in said)
    events = [json.loads(line)["event"] for line in said]
    for away, back in (("links.refresh_failed", "links.refresh_back"),
                       ("callback.storage_unavailable", "callback.storage_back"),
                       ("readyz.storage_unavailable", "readyz.storage_back")):
        assert (events.count(away), events.count(back)) == (1, 1), away


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


async def test_readyz_says_journaling_while_postgres_refuses_writes_and_answers_reads(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    # Another session holds the clicks table (a migration, a long transaction): every
    # batch waits out storage.timeout_seconds and goes to the journal, while /readyz's
    # ping still answers. It said "storage": "ok" all through, with nothing written.
    async with _pg_gateway(aiohttp_client, tmp_path, recorder__retry_max_seconds=1) as (
            client, url, schema):
        shops = await _shop(client)
        answered = {tenant.id: 0 for tenant, _ in shops}
        async with _held(url, schema, "clicks"):

            async def journaling() -> bool:
                for tenant, product in shops:
                    assert await _tap(client, product) == 302
                    answered[tenant.id] += 1
                status, body = await _readyz(client)
                return (status, body["storage"]) == (200, "journaling") and bool(
                    body["journaled"])

            await until(journaling, interval=0.2, what="/readyz saying clicks are journaled")
        await _all_counted(client, answered, shops, within=30)
        status, body = await _readyz(client)
        assert (status, body["storage"], body["dropped"]) == (200, "ok", 0)


class _Outage:
    """SQLite locked by another connection and the journal's directory a plain file; with
    ``clicklog``, the click log's directory too (a gateway that has made no segment yet
    then holds rows in memory)."""

    def __init__(self, data: Path, *, clicklog: bool = False) -> None:
        self.dirs = [data / "journal", *([data / "clicklog"] if clicklog else [])]
        self.lock = sqlite3.connect(data / "linkloop.db", isolation_level=None)

    def __enter__(self) -> _Outage:
        self.lock.execute("BEGIN EXCLUSIVE")
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)
            directory.write_text("a file where a directory should be\n")
        return self

    def __exit__(self, *exc: object) -> None:
        for directory in self.dirs:
            directory.unlink()
        self.lock.execute("ROLLBACK")
        self.lock.close()


async def test_storage_locked_and_journal_unwritable_lose_no_click(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, storage__timeout_seconds=1, recorder__retry_max_seconds=1)))
    shops = await _shop(client)
    answered = {tenant.id: 0 for tenant, _ in shops}
    statuses: list[int] = []
    with _Outage(tmp_path / "data"):
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_SECONDS:
            for tenant, product in shops:
                assert await _tap(client, product) == 302
                answered[tenant.id] += 1
            status, body = await _readyz(client)
            statuses.append(status)
            assert body["dropped"] == 0
            await asyncio.sleep(0.1)
    # Not ready from the moment the first batch found neither storage nor the journal
    # until the outage ended.
    assert 503 in statuses
    assert set(statuses[statuses.index(503):]) == {503}, statuses
    await _all_counted(client, answered, shops, within=30)
    status, body = await _readyz(client)
    assert (status, body["dropped"], body["pending"]) == (200, 0, 0)


async def test_a_full_queue_with_the_journal_unwritable_holds_then_counts_what_it_drops(
    aiohttp_client: ClientFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.logs import configure_logging

    configure_logging("info", "json")
    # With no click log either, three clicks fill the queue; past that the overflow path
    # (straight to the journal) must hold them in memory, up to 40, and only then drop,
    # and count, any.
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, storage__timeout_seconds=1, recorder__retry_max_seconds=1,
        recorder__queue_size=3, recorder__hold_size=40, recorder__batch_size=2)))
    shops = await _shop(client)
    answered = {tenant.id: 0 for tenant, _ in shops}
    with _Outage(tmp_path / "data", clicklog=True):
        for _ in range(15):  # 30 clicks: held, none lost
            for tenant, product in shops:
                assert await _tap(client, product) == 302
                answered[tenant.id] += 1
        # Not ready once a batch found neither storage nor the journal; nothing lost.
        deadline = time.monotonic() + 10
        while (status := (await _readyz(client))[0]) != 503:
            assert time.monotonic() < deadline, "ready with clicks held in memory"
            await asyncio.sleep(0.1)
        assert (await _readyz(client))[1]["dropped"] == 0
        for _ in range(10):  # 20 more: past what memory may hold
            for tenant, product in shops:
                assert await _tap(client, product) == 302
                answered[tenant.id] += 1
        status, body = await _readyz(client)
        dropped = body["dropped"]
        assert status == 503 and dropped >= 50 - 40 - 2  # the hold, and a batch in flight
    # Every click answered is in the stats or in the count of dropped ones, never neither.
    deadline = time.monotonic() + 30
    while (counted := sum([await _clicks(client, t) or 0 for t, _ in shops])) != 50 - dropped:
        assert time.monotonic() < deadline, f"{counted} counted, {dropped} dropped of 50"
        await asyncio.sleep(0.2)
    status, body = await _readyz(client)
    assert (status, body["dropped"]) == (200, dropped)
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith("{")]
    assert any(line["event"] == "recorder.clicks_dropped" for line in logged)


async def test_a_wecom_add_waits_out_storage_trouble_and_is_never_given_up(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    # Storage refuses the callback worker's writes (a table held by another session),
    # while the inbox still answers: the adds wait, however many times they are tried,
    # and count once storage takes them. Given up on after five tries, they were lost.
    async with _pg_gateway(aiohttp_client, tmp_path) as (client, url, schema):
        assert client.app is not None
        store, worker = client.app[STORE], client.app[CALLBACKS]
        await worker.close()  # drained by hand below
        tenants = [await add_tenant(client, merchant) for merchant in ("acme", "bolt")]
        for n, tenant in enumerate(tenants):
            assert await store.accept_callback(tenant.id, f"n-{n}",
                                               FakeWeCom.add_contact_event(None, f"wmEXT{n}"))
        async with _held(url, schema, "wecom_contacts"):
            for _ in range(6):
                with contextlib.suppress(StoreUnavailable):
                    await worker.drain()
            await client.app[RECORDER].flush()
            for tenant in tenants:  # each drain met the lock: nothing stored yet
                assert await _adds(client, tenant) == [], tenant.id
        await worker.drain()
        await client.app[RECORDER].flush()
        for tenant in tenants:
            assert await _adds(client, tenant) == [("unattributed", 1)], tenant.id


async def _adds(client: TestClient[Any, Any], tenant: Tenant) -> list[tuple[str, int]]:
    """The merchant's stats rows, by platform: (platform, adds)."""
    resp = await client.get("/api/stats?by=platform", headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    return [(row["platform"], row["adds"]) for row in (await resp.json())["rows"]]
