"""GET /metrics: admin tokens only; after load on `serve --workers 2` the click counters
equal the clicks recorded and the share link's redirects, pages and latency add up; in one
process each share-link answer counts once under its status, a failure before its click
and one after it included; WeCom API calls and refusals are counted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app

from .conftest import BOT_UA, DESKTOP_UA, TAOBAO_UA, Tenant, add_tenant, make_settings
from .fake_wecom import FakeWeCom
from .tcp_proxy import TcpProxy
from .test_cli import _merchant_and_token, run, serving
from .test_outages import pg_behind_proxy  # noqa: F401 -- fixture
from .test_wecom import CALLBACK_SECRETS, PRODUCT, WECHAT_UA
from .wait import until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_are_for_admin_tokens(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(tmp_path)))
    tenant = await add_tenant(client, "acme")
    assert client.app is not None
    from gateway.appkeys import TOKENS

    admin = client.app[TOKENS].mint("acme", "admin", 60)
    nobody = await client.get("/metrics")
    assert nobody.status == 401 and (await nobody.json())["error"]["code"] == "unauthorized"
    for token in (tenant.token, tenant.marketing_token):
        refused = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert refused.status == 403 and (await refused.json())["error"]["code"] == "forbidden"
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status == 200
    assert allowed.headers["Content-Type"].startswith("text/plain; version=")
    samples = _samples(await allowed.text())
    assert ("linkloop_clicks_total", (("outcome", "written"),)) in samples
    assert _value(samples, "linkloop_http_requests_total", route="/metrics", status="403") >= 2


async def test_after_load_the_counters_equal_the_clicks_recorded(cli_env: dict[str, str],
                                                                 ) -> None:
    token = _merchant_and_token(cli_env)
    admin = run(cli_env, "token", "--merchant", "acme", "--role", "admin").stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    load = {TAOBAO_UA: 400, DESKTOP_UA: 120, BOT_UA: 80}  # redirects, landing pages, previews
    clicks = sum(load.values())
    with serving(cli_env, "--workers", "2") as (_proc, base):
        # A connection per request (the kernel spreads new ones over the workers), once
        # both workers answer.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                         connector=aiohttp.TCPConnector(force_close=True),
                                         ) as http:
            seen: set[int] = set()
            deadline = time.monotonic() + 30
            while seen != {0, 1}:
                assert time.monotonic() < deadline, f"only workers {seen} answer"
                async with http.get(f"{base}/readyz") as ready:
                    seen.add((await ready.json())["worker"])
            made = await http.post(f"{base}/api/products", headers=auth, json={
                "title": "明前龙井", "targets": {"taobao": {"item_id": "600000000001"},
                                                 "web": {"url": "https://shop.acme.cn/tea"}}})
            assert made.status == 201, await made.text()
            code = (await made.json())["code"]

            async def click(ua: str) -> int:
                async with http.get(f"{base}/p/{code}", headers={"User-Agent": ua},
                                    allow_redirects=False) as resp:
                    await resp.read()
                    return resp.status

            taken_by: dict[int, int] = {}
            statuses = await asyncio.gather(*(click(ua) for ua, n in load.items()
                                              for _ in range(n)))
            assert statuses.count(302) == load[TAOBAO_UA]
            assert (await http.get(f"{base}/p/nosuchcode")).status == 404  # no click
            # A retired link: its click still counts (as gone), and it is no redirect.
            made_id = (await made.json())["id"]
            assert (await http.delete(f"{base}/api/products/{made_id}", headers=auth)).ok
            # The worker that did not retire it hears of it within a second: until then
            # its answers are redirects, each a click too.
            deadline = time.monotonic() + 10
            redirects = load[TAOBAO_UA]
            while (status := await click(TAOBAO_UA)) != 410:
                assert status == 302 and time.monotonic() < deadline
                redirects += 1
                clicks += 1
            clicks += 1

            # Every click reaches storage, and each worker's figures reach /metrics
            # within a second: poll until the written counter says all of them.
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"{base}/metrics",
                                    headers={"Authorization": f"Bearer {admin}"}) as resp:
                    assert resp.status == 200
                    samples = _samples(await resp.text())
                written = _value(samples, "linkloop_clicks_total", outcome="written")
                if written == clicks or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            # Both workers took clicks: the figures below are their sum.
            for _ in range(20):
                async with http.get(f"{base}/readyz") as ready:
                    body = await ready.json()
                    taken_by[body["worker"]] = body["written"]
    assert all(taken_by.values()) and len(taken_by) == 2
    stats = json.loads(run(cli_env, "stats", "--merchant", "acme", "--json").stdout)
    recorded = sum(r["clicks"] + r["bot_clicks"] for r in stats["rows"])
    assert recorded == clicks
    assert _value(samples, "linkloop_clicks_total", outcome="written") == recorded
    assert _value(samples, "linkloop_clicks_total", outcome="taken") == recorded
    assert _value(samples, "linkloop_clicks_total", outcome="journaled") == 0
    assert _value(samples, "linkloop_clicks_total", outcome="dropped") == 0
    requests = "linkloop_http_requests_total"
    assert _value(samples, requests, route="/p/{code}", status="302") == redirects
    assert _value(samples, requests, route="/p/{code}", status="200") == (
        load[DESKTOP_UA] + load[BOT_UA])
    assert _value(samples, requests, route="/p/{code}", status="404") == 1
    assert _value(samples, requests, route="/p/{code}", status="410") == 1
    assert _value(samples, requests, route="/api/products", status="201") == 1
    # Every share-link request was timed, the 404 too.
    assert _value(samples, "linkloop_share_link_seconds_count") == clicks + 1  # the 404 too
    assert _value(samples, "linkloop_share_link_seconds_bucket", le="+Inf") == clicks + 1
    assert 0 < _value(samples, "linkloop_share_link_seconds_sum") < clicks
    assert _value(samples, "linkloop_recorder_queue_depth") == 0
    assert _value(samples, "linkloop_journal_bytes") == 0


async def test_wecom_calls_and_refusals_are_counted(aiohttp_client: Any, aiohttp_server: Any,
                                                    tmp_path: Path) -> None:
    wecom = FakeWeCom()
    server: TestServer = await aiohttp_server(wecom.app())
    settings = make_settings(tmp_path, wecom__api_base=str(server.make_url("/cgi-bin")))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    tenant = await add_tenant(client, "acme")
    assert client.app is not None
    from gateway.appkeys import TOKENS

    admin = {"Authorization": f"Bearer {client.app[TOKENS].mint('acme', 'admin', 60)}"}

    async def scrape() -> Samples:
        return _samples(await (await client.get("/metrics", headers=admin)).text())

    before = await scrape()
    resp = await client.put("/api/entry", headers=tenant.auth, json={
        "kind": "contact_way", "users": ["zhangsan"], **CALLBACK_SECRETS})
    assert resp.status == 200
    product = await (await client.post("/api/products", json=PRODUCT,
                                       headers=tenant.auth)).json()
    wecom.fail_with = 60011  # WeCom refuses: the shopper gets a page, the refusal a count
    assert (await client.get(f"/e/{product['code']}",
                             headers={"User-Agent": WECHAT_UA})).status == 503
    wecom.fail_with = None
    assert (await client.get(f"/e/{product['code']}",
                             headers={"User-Agent": WECHAT_UA})).status == 200
    after = await scrape()

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    calls = "linkloop_platform_api_calls_total"
    api = "externalcontact/add_contact_way"
    assert grew(calls, platform="wecom", api=api) == 2
    assert grew(calls, platform="wecom", api="gettoken") >= 1
    assert grew("linkloop_platform_api_errors_total", platform="wecom", api=api,
                kind="errcode") == 1
    assert grew("linkloop_http_requests_total", route="/e/{code}", status="503") == 1


async def test_each_share_link_answer_is_counted_once_under_its_status(
        aiohttp_client: Any, tmp_path: Path,
        pg_behind_proxy: tuple[TcpProxy, str]) -> None:  # noqa: F811
    # The share link counts its pages, its retired links and its failures; its redirects are
    # the clicks taken less those. A failure after the click (the landing page's entry look-up
    # failing) is a click answered 503, not a redirect; one before it (an uncached link's read
    # failing) takes no click, and must not take a redirect away either. Storage fails for
    # real: PostgreSQL cut off through a proxy, while the links asked for are cached.
    from gateway.appkeys import TOKENS

    proxy, url = pg_behind_proxy
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(
        tmp_path, storage__url=url, storage__timeout_seconds=1,
        recorder__retry_max_seconds=1)))
    acme, other = await add_tenant(client, "acme"), await add_tenant(client, "other")
    products = []
    for tenant in (acme, other, other):
        made = await client.post("/api/products", json=PRODUCT, headers=tenant.auth)
        assert made.status == 201
        products.append(await made.json())
    mine, theirs, retired = products
    assert (await client.delete(f"/api/products/{retired['id']}", headers=other.auth)).ok
    assert client.app is not None
    admin = {"Authorization": f"Bearer {client.app[TOKENS].mint('acme', 'admin', 60)}"}

    async def scrape() -> Samples:
        return _samples(await (await client.get("/metrics", headers=admin)).text())

    async def tap(product: dict[str, Any], ua: str, status: int, code: str = "") -> None:
        resp = await client.get(f"/p/{code or product['code']}", headers={"User-Agent": ua},
                                allow_redirects=False)
        assert resp.status == status, await resp.text()

    before = await scrape()
    await tap(mine, TAOBAO_UA, 302)
    await tap(theirs, TAOBAO_UA, 302)
    await tap(mine, DESKTOP_UA, 200)  # a landing page (acme's entry look-up, kept)
    await tap(theirs, BOT_UA, 200)  # a preview (no entry looked up)
    await tap(retired, TAOBAO_UA, 410)
    proxy.cut()
    await tap(theirs, DESKTOP_UA, 503)  # after its click: other's entry never read yet
    await tap(mine, TAOBAO_UA, 503, code="notcachedyet")  # before any click
    proxy.forward()
    await tap(mine, TAOBAO_UA, 302)
    after = await scrape()

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("linkloop_clicks_total", outcome="taken") == 7
    assert {status: grew("linkloop_http_requests_total", route="/p/{code}", status=status)
            for status in ("302", "200", "410", "503", "500")} == {
        "302": 3, "200": 2, "410": 1, "503": 2, "500": 0}

    # What each merchant sees: the click answered 503 after it was taken counts like the
    # others (journaled through the cut), under its own merchant; the one refused before
    # its click, nowhere. (clicks, bot_clicks) each.
    async def counted(tenant: Tenant) -> tuple[int, int]:
        resp = await client.get("/api/stats?by=platform", headers=tenant.auth)
        rows = (await resp.json())["rows"] if resp.status == 200 else []
        return sum(r["clicks"] for r in rows), sum(r["bot_clicks"] for r in rows)

    figures: list[tuple[int, int]] = []

    async def all_counted() -> bool:
        figures[:] = [await counted(tenant) for tenant in (acme, other)]
        return figures == [(3, 0), (3, 1)]

    await until(all_counted, what="acme's 3 clicks, other's 3 and its bot's in the stats")
