"""The click writer process: clicks the gateway answered reach storage, whatever it suffers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.appkeys import RECORDER, STORE
from gateway.settings import Settings
from gateway.store import Click, StoreUnavailable, open_store
from gateway.writer import WriterProcess

from .conftest import TAOBAO_UA, ClientFactory, Tenant, add_tenant, make_settings


async def _product(client: TestClient[Any, Any], tenant: Tenant) -> str:
    resp = await client.post("/api/products", headers=tenant.auth, json={
        "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
    assert resp.status == 201, await resp.text()
    code: str = (await resp.json())["code"]
    return code


async def _click(client: TestClient[Any, Any], code: str, times: int) -> None:
    for _ in range(times):
        resp = await client.get(f"/p/{code}", headers={"User-Agent": TAOBAO_UA},
                                allow_redirects=False)
        assert resp.status == 302


async def _taobao_clicks(client: TestClient[Any, Any], tenant: Tenant) -> int:
    resp = await client.get("/api/stats", headers=tenant.auth, params={"by": "platform"})
    rows = (await resp.json())["rows"]
    return sum(r["clicks"] for r in rows if r["platform"] == "taobao")


def _writer(client: TestClient[Any, Any]) -> WriterProcess:
    assert client.app is not None
    writer = client.app[RECORDER].sink
    assert isinstance(writer, WriterProcess)
    return writer


async def test_clicks_are_written_by_a_separate_process(
        aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    from gateway.app import create_app

    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    tenant = await add_tenant(client, "acme")
    code = await _product(client, tenant)
    await _click(client, code, 25)
    assert client.app is not None
    await client.app[RECORDER].flush()
    writer = _writer(client)
    assert writer.pid is not None and writer.pid != os.getpid()
    assert await _taobao_clicks(client, tenant) == 25


async def test_a_killed_writer_loses_no_click_and_counts_none_twice(
        aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    from gateway.app import create_app

    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    tenant = await add_tenant(client, "acme")
    code = await _product(client, tenant)
    assert client.app is not None
    recorder = client.app[RECORDER]
    await _click(client, code, 20)
    await recorder.flush()
    writer = _writer(client)
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await _click(client, code, 30)
    await recorder.flush()
    # A new child took over: nothing had to wait in the journal, nothing counted twice.
    assert writer.pid not in (None, first)
    assert recorder.journaled == 0 and recorder.storage_ok
    assert await _taobao_clicks(client, tenant) == 50


async def test_a_writer_that_cannot_open_storage_is_a_storage_failure(tmp_path: Path) -> None:
    # Nothing listens on port 1: the child's PostgreSQL connection is refused.
    settings = make_settings(tmp_path, storage__url="postgresql://nobody@127.0.0.1:1/none")
    writer = WriterProcess(settings)
    click = Click(id="c00000000001", merchant_id="acme", product_id=1, ts=1.0,
                  day="2026-11-01", platform="taobao", source="ua", visitor="v1", ip_hash="h")
    with pytest.raises(StoreUnavailable, match="storage did not open"):
        await writer.record([click], [])
    assert writer.pid is None
    await writer.close()


async def test_the_thread_writer_still_works_when_the_process_is_turned_off(
        aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    from gateway.app import create_app

    settings = make_settings(tmp_path, recorder__writer_process=False)
    client = await aiohttp_client(create_app(settings))
    tenant = await add_tenant(client, "acme")
    code = await _product(client, tenant)
    await _click(client, code, 5)
    assert client.app is not None
    assert client.app[RECORDER].sink is client.app[STORE]
    await client.app[RECORDER].flush()
    assert await _taobao_clicks(client, tenant) == 5


def _threads_policy(pid: int) -> set[int]:
    """The scheduling policies of every thread of a process."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _clicks(*numbers: int) -> list[Click]:
    return [Click(id=f"c{n:011d}", merchant_id="acme", product_id=1, ts=float(n),
                  day="2026-11-01", platform="taobao", source="ua", visitor=f"v{n}",
                  ip_hash="h") for n in numbers]


async def _stored_ids(settings: Settings, merchant: str = "acme") -> list[str]:
    store = await open_store(settings)
    try:
        return [c.id for c in await store.export_clicks(merchant, after="", limit=5000)]
    finally:
        await store.close()


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="per-thread priorities and CPU affinity are Linux's")


def _threads_nice(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@linux_only
async def test_a_writer_sharing_one_busy_cpu_still_writes(tmp_path: Path) -> None:
    """One CPU, busy with requests: the writer is behind them, never starved of it.
    (An idle-priority writer got no time at all here, and its clicks went to the journal.)"""
    settings = make_settings(tmp_path)
    writer = WriterProcess(settings)
    burner = None
    try:
        await writer.record(_clicks(0), [])
        first = writer.pid
        assert first is not None and _threads_nice(first) == {settings["recorder.writer_nice"]}
        assert {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{first}/task")} == {
            os.SCHED_OTHER}
        cpu = min(os.sched_getaffinity(0))
        for tid in os.listdir(f"/proc/{first}/task"):
            os.sched_setaffinity(int(tid), {cpu})
        # A normal-priority process that never sleeps, on the same CPU: the requests.
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(burner.pid, {cpu})
        await asyncio.wait_for(writer.record(_clicks(*range(1, 1001)), []), 60)
        assert writer.pid == first
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        await writer.close()
    assert await _stored_ids(settings) == [c.id for c in _clicks(*range(1001))]


async def test_a_writer_waiting_on_a_lock_keeps_its_batch(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    writer = WriterProcess(settings)
    try:
        await writer.record(_clicks(0), [])
        first = writer.pid
        # Another process holds the database for a while: the child sleeps on the lock and
        # must keep its batch (and stay the writer).
        blocker = sqlite3.connect(settings.data_dir / "linkloop.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        batch = asyncio.ensure_future(writer.record(_clicks(1), []))
        # The scenario, not a wait for an answer: the lock is held for 2.5 s (within
        # storage.timeout_seconds, 5 s) while the batch arrives. Nothing asserted depends on
        # how far the child got meanwhile: one that never reached the lock keeps it too.
        await asyncio.sleep(2.5)
        blocker.execute("ROLLBACK")
        blocker.close()
        await asyncio.wait_for(batch, 20)
        assert writer.pid == first
    finally:
        await writer.close()
    assert await _stored_ids(settings) == [c.id for c in _clicks(0, 1)]


async def test_a_writer_tells_an_outage_once_not_every_retry(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The gateway retries a failed batch every few seconds for as long as storage is away;
    # the child said why each time, a line a retry all through a long outage.
    settings = make_settings(tmp_path, storage__timeout_seconds=0.2)
    writer = WriterProcess(settings)
    rows = [*_clicks(0), *_clicks_of("brew", 0)]

    async def fails_while_locked(times: int) -> None:
        blocker = sqlite3.connect(settings.data_dir / "linkloop.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for n in range(times):
                with pytest.raises(StoreUnavailable, match="locked"):
                    await writer.record([*_clicks(n + 1), *_clicks_of("brew", n + 1)], [])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    try:
        await writer.record(rows, [])
        first = writer.pid
        await fails_while_locked(4)  # one outage, four tries
        await writer.record(rows, [])  # storage back
        await fails_while_locked(2)  # and a second outage
        assert writer.pid == first
    finally:
        await writer.close()
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines()
            if line.startswith("{")]
    failed = [line for line in said if line["event"] == "writer.batch_failed"]
    assert len(failed) == 2, failed  # once an outage, with what failed
    assert all("locked" in line["error"] for line in failed)
    assert await _stored_ids(settings) == ["c00000000000"]
    assert await _stored_ids(settings, "brew") == ["brewc00000000000"]


def _clicks_of(merchant: str, *numbers: int) -> list[Click]:
    return [click._replace(id=f"{merchant}{click.id}", merchant_id=merchant)
            for click in _clicks(*numbers)]
