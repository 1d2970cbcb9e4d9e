"""A gateway killed with ``kill -9`` under load keeps every click it answered (real processes).

The recorder holds clicks in memory until the writer stores them; here it is told to hold
them for a minute, so at the kill every answered click is still unwritten: only the click
log (gateway/clicklog.py), shared memory the kernel keeps when the process dies, has them.
The next start must store each of them, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp

from .conftest import TAOBAO_UA
from .test_cli import run, serving
from .wait import until

#: Hold clicks in memory for a minute: the kill comes first, with all of them unwritten.
HOLDING = {"LINKLOOP_RECORDER_FLUSH_INTERVAL_MS": "60000",
           "LINKLOOP_RECORDER_BATCH_SIZE": "100000",
           "LINKLOOP_RECORDER_QUEUE_SIZE": "100000"}


def _merchant(env: dict[str, str], merchant_id: str) -> dict[str, str]:
    assert run(env, "merchant", "create", merchant_id, "--name", merchant_id).returncode == 0
    token = run(env, "token", "--merchant", merchant_id, "--role", "merchant", "--ttl", "1h")
    return {"Authorization": f"Bearer {token.stdout.strip()}"}


async def _product(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> str:
    resp = await http.post(f"{base}/api/products", headers=auth, json={
        "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
    assert resp.status == 201, await resp.text()
    code: str = (await resp.json())["code"]
    return code


def _stored_clicks(env: dict[str, str], merchant_id: str) -> list[str]:
    out = run(env, "export", "--merchant", merchant_id)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return [line["data"]["id"] for line in lines if line.get("kind") == "click"]


async def test_kill_9_under_load_loses_no_answered_click(cli_env: dict[str, str]) -> None:
    env = {**cli_env, **HOLDING}
    auths = {m: _merchant(env, m) for m in ("acme", "brew")}
    answered: dict[str, list[str]] = {"acme": [], "brew": []}

    async def shopper(http: aiohttp.ClientSession, url: str, merchant: str) -> None:
        # A new visitor each time: the answer's cookie is the click's id.
        while True:
            async with http.get(url, headers={"User-Agent": TAOBAO_UA},
                                allow_redirects=False) as resp:
                assert resp.status == 302
                answered[merchant].append(resp.cookies["ll_v"].value)

    with serving(env) as (proc, base):
        async with aiohttp.ClientSession() as http:
            codes = {m: await _product(http, base, auth) for m, auth in auths.items()}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            shoppers = [asyncio.create_task(shopper(http, f"{base}/p/{codes[m]}", m))
                        for m in ("acme", "brew", "acme", "brew")]
            await until(lambda: min(map(len, answered.values())) >= 150,
                        within=30, what="clicks answered")
            os.killpg(proc.pid, signal.SIGKILL)  # the gateway and its writer, mid-load
            proc.wait(timeout=10)
            results = await asyncio.gather(*shoppers, return_exceptions=True)
            assert all(isinstance(r, aiohttp.ClientError) for r in results), results
    killed_with = {m: set(ids) for m, ids in answered.items()}
    assert all(len(ids) >= 150 for ids in killed_with.values())

    # The next start stores what the killed one answered, each click once.
    with serving(env) as (_, base):
        async def in_storage() -> bool:
            return all(killed_with[m] <= set(_stored_clicks(env, m)) for m in killed_with)

        await until(in_storage, within=60, interval=0.5, what="the killed gateway's clicks stored")
    for merchant, ids in killed_with.items():
        stored = _stored_clicks(env, merchant)
        assert len(stored) == len(set(stored)), "a click stored twice"
        assert ids <= set(stored)
        other = ({"acme", "brew"} - {merchant}).pop()
        assert not ids & set(_stored_clicks(env, other)), "a click under the wrong merchant"
        stats: dict[str, Any] = json.loads(run(env, "stats", "--merchant", merchant).stdout)
        assert stats["rows"][0]["clicks"] == len(stored) >= len(ids)
