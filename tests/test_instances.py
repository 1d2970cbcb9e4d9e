"""Several gateways on one PostgreSQL, as real processes: counts sum, changes travel."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .conftest import TAOBAO_UA
from .pg import fresh_schema, postgres_url, with_schema
from .test_cli import free_port, run, serving

# How soon a change made through one gateway reaches another's link cache: stated
# properties of the product, so the tests below hold them as bounds on their polling
# (measured on real server processes) rather than as a hang's DEADLINE.
#: Issue 6: "a product retired through one answers 410 on the other within a second"
#: (PostgreSQL LISTEN/NOTIFY).
PG_CHANGE_REACHES_WITHIN = 1.0
#: README: on SQLite "each process reads a log of changed links ... twice a second": a
#: change is heard at the next look, given three looks' time.
SQLITE_CHANGE_REACHES_WITHIN = 3 * 0.5


@pytest.fixture
async def pg_env(cli_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    url = postgres_url()
    async with fresh_schema(url, create=False) as schema:
        yield {**cli_env, "LINKLOOP_STORAGE_URL": with_schema(url, schema)}


def _token(env: dict[str, str]) -> dict[str, str]:
    assert run(env, "merchant", "create", "acme", "--name", "Acme").returncode == 0
    token = run(env, "token", "--merchant", "acme", "--role", "merchant").stdout.strip()
    return {"Authorization": f"Bearer {token}"}


async def _tea(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, Any]:
    """A product with a Taobao target, made through the API of the gateway at ``base``."""
    resp = await http.post(f"{base}/api/products", headers=auth, json={
        "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
    assert resp.status == 201, await resp.text()
    product: dict[str, Any] = await resp.json()
    return product


async def _click(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, headers={"User-Agent": TAOBAO_UA}, allow_redirects=False) as r:
        return r.status


async def _retire_reaches(http: aiohttp.ClientSession, a: str, b: str,
                          product: dict[str, Any], auth: dict[str, str], within: float) -> int:
    """Retire ``product`` through gateway A; B must answer its link with 410 in time.
    Returns how many times B was asked: each is a click (redirected, then gone)."""
    assert (await http.delete(f"{a}/api/products/{product['id']}", headers=auth)).status == 200
    started = time.monotonic()
    asked = 1
    while await _click(http, f"{b}/p/{product['code']}") != 410:
        assert time.monotonic() - started < within, f"B still serves a link retired {within} s ago"
        await asyncio.sleep(0.02)
        asked += 1
    return asked


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


async def test_two_gateways_sum_exactly_and_a_retire_travels_within_a_second(
    pg_env: dict[str, str],
) -> None:
    auth = _token(pg_env)
    with serving(pg_env) as (proc_a, a), serving(pg_env) as (proc_b, b):
        async with aiohttp.ClientSession() as http:
            product = await _tea(http, a, auth)
            code = product["code"]
            # B has never seen the code: it must find it (no stale "missing" entry).
            sent_a, sent_b = 120, 80
            statuses = await asyncio.gather(
                *(_click(http, f"{a}/p/{code}") for _ in range(sent_a)),
                *(_click(http, f"{b}/p/{code}") for _ in range(sent_b)))
            assert statuses == [302] * (sent_a + sent_b)
            # B now holds the product in its cache; retire it through A.
            asked = await _retire_reaches(http, a, b, product, auth,
                                          within=PG_CHANGE_REACHES_WITHIN)
        _stop(proc_a, proc_b)
    stats = json.loads(run(pg_env, "stats", "--merchant", "acme").stdout)
    # Every click counts, the last one at B's 410 as gone (a retired link's visit).
    assert [(r["platform"], r["clicks"], r["redirects"]) for r in stats["rows"]] == [
        ("taobao", sent_a + sent_b + asked, sent_a + sent_b + asked - 1)]


async def test_workers_share_one_port_and_lose_nothing(pg_env: dict[str, str]) -> None:
    auth = _token(pg_env)
    port = free_port()
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port),
                             "--workers", "2"], env=pg_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        workers: set[Any] = set()
        deadline = time.monotonic() + 20
        while len(workers) < 2:  # new connections spread over both processes
            assert time.monotonic() < deadline, f"saw only workers {workers}"
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
                    workers.add((await r.json())["worker"])
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{base}/api/products", headers=auth, json={
                "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
            code = (await resp.json())["code"]
        clicks = 200
        for _ in range(clicks // 20):  # fresh sessions, so connections land on both
            async with aiohttp.ClientSession() as http:
                statuses = await asyncio.gather(
                    *(_click(http, f"{base}/p/{code}") for _ in range(20)))
                assert statuses == [302] * 20
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    stats = json.loads(run(pg_env, "stats", "--merchant", "acme").stdout)
    assert stats["rows"][0]["clicks"] == clicks


async def test_two_gateways_on_one_sqlite_file_see_each_others_changes_within_a_second(
    cli_env: dict[str, str],
) -> None:
    # Two processes on one data directory, as `serve --workers 2` runs them. The link
    # cache's TTL is left at its default (60 s): only the change log can make this pass.
    auth = _token(cli_env)
    with serving(cli_env) as (proc_a, a), serving(cli_env) as (proc_b, b):
        async with aiohttp.ClientSession() as http:
            product = await _tea(http, a, auth)
            code = product["code"]
            assert await _click(http, f"{b}/p/{code}") == 302  # B caches the product
            resp = await http.patch(f"{a}/api/products/{product['id']}", headers=auth, json={
                "targets": {"taobao": {"item_id": "600000000002"}}})
            assert resp.status == 200, await resp.text()
            started = time.monotonic()
            while True:
                async with http.get(f"{b}/p/{code}", headers={"User-Agent": TAOBAO_UA},
                                    allow_redirects=False) as r:
                    if r.headers["Location"].endswith("id=600000000002"):
                        break
                assert time.monotonic() - started < SQLITE_CHANGE_REACHES_WITHIN, (
                    f"B still sends shoppers to the old item {SQLITE_CHANGE_REACHES_WITHIN} s on")
                await asyncio.sleep(0.02)
            await _retire_reaches(http, a, b, product, auth, within=SQLITE_CHANGE_REACHES_WITHIN)
        _stop(proc_a, proc_b)
