"""Numbers marketing can trust, end to end over HTTP: each click's outcome, unique visitors
distinct over days, events replayed before their click, the time zone every answer names,
and older exports and journals still read."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CLOCK, RECORDER, STORE
from gateway.clock import DayClock
from gateway.store import Channel, Click, Merchant, open_store
from gateway.transfer import import_merchant

from . import pg
from .conftest import (
    BOT_UA,
    DESKTOP_UA,
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)
from .test_cli import run
from .test_dashboard import Figures, add_user, login
from .wait import until

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 "
             "MicroMessenger/8.0.40(0x18002831) NetType/WIFI")
#: A product WeChat can't open: its only storefront is Taobao's.
TAOBAO_ONLY = {"title": "明前龙井", "targets": {"taobao": {"item_id": "600000000001"}}}


async def _stats(client: TestClient[Any, Any], tenant: Tenant, query: str) -> dict[str, Any]:
    assert client.app is not None
    await client.app[RECORDER].flush()
    resp = await client.get(f"/api/stats?{query}", headers=tenant.marketing_auth)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


def _by(answer: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in answer["rows"]}


async def test_each_click_counts_what_the_shopper_got(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    other = await add_tenant(client, "other")
    tea = await create_product(client, tenant)  # Taobao, JD and the web shop
    blocked = await create_product(client, tenant, TAOBAO_ONLY)
    theirs = await create_product(client, other, {**TAOBAO_ONLY, "slug": "theirs"})

    async def tap(product: dict[str, Any], ua: str) -> Any:
        client.session.cookie_jar.clear()
        return await client.get(f"/p/{product['code']}", headers={"User-Agent": ua},
                                allow_redirects=False)

    # In Taobao: straight to the item, one redirect and one storefront open.
    assert (await tap(tea, TAOBAO_UA)).status == 302
    # On a desktop: the landing page, then one /o/ hop to the web shop.
    landing = await tap(tea, DESKTOP_UA)
    hop = re.search(r'href="(/o/[^"]+/web\?c=[^"]+)"', await landing.text())
    assert landing.status == 200 and hop
    opened = await client.get(hop.group(1), headers={"User-Agent": DESKTOP_UA},
                              allow_redirects=False)
    assert opened.status == 302
    # In WeChat, which blocks Taobao: the open-in-browser guide.
    guide = await tap(blocked, WECHAT_UA)
    assert guide.status == 200 and "浏览器" in await guide.text()
    # A link preview: a bot, no outcome of a person's.
    assert (await tap(tea, BOT_UA)).status == 200
    await tap(theirs, TAOBAO_UA)  # another merchant's shopper
    answer = await _stats(client, tenant, "by=platform")
    rows = _by(answer, "platform")
    figures = ("clicks", "redirects", "landings", "guides", "storefront_opens", "bot_clicks")
    assert {p: tuple(r[f] for f in figures) for p, r in rows.items()} == {
        "taobao": (1, 1, 0, 0, 1, 0), "web": (1, 0, 1, 0, 1, 1), "wechat": (1, 0, 0, 1, 0, 0)}
    assert rows["taobao"]["open_rate"] == 1.0  # no longer 0% for the apps that work best
    assert answer["total"]["storefront_opens"] == 2 and answer["total"]["guides"] == 1
    assert _by(await _stats(client, other, "by=platform"), "platform")["taobao"][
        "redirects"] == 1


async def test_a_retired_links_clicks_count_as_gone(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    tea = await create_product(client, tenant)
    await client.delete(f"/api/products/{tea['id']}", headers=tenant.auth)
    resp = await client.get(f"/p/{tea['code']}", headers={"User-Agent": TAOBAO_UA},
                            allow_redirects=False)
    assert resp.status == 410
    row = (await _stats(client, tenant, "by=platform"))["rows"][0]
    assert (row["platform"], row["clicks"], row["redirects"], row["landings"],
            row["guides"], row["storefront_opens"]) == ("taobao", 1, 0, 0, 0, 0)


class FakeTime:
    """The clock a test sets: seconds since the epoch."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(aiohttp_client: ClientFactory, tmp_path: Path,
                  ) -> tuple[TestClient[Any, Any], FakeTime]:
    """A gateway on a clock the test sets (plain-http public URL, for the dashboard)."""
    app = create_app(make_settings(tmp_path, server__public_url=""))
    fake = FakeTime(datetime(2026, 11, 30, 4, 0, tzinfo=UTC))
    app[CLOCK] = DayClock("Asia/Shanghai", clock=fake)
    return await aiohttp_client(app), fake


async def test_unique_visitors_are_distinct_over_days_in_every_grouping(
    clocked: tuple[TestClient[Any, Any], FakeTime],
) -> None:
    """One visitor on two days and another on one day: 2 unique visitors over both days,
    by platform, product, channel and day, and the same figures on the dashboard."""
    client, clock = clocked
    acme = await add_tenant(client, "acme")
    other = await add_tenant(client, "other")
    tea = await create_product(client, acme)
    theirs = await create_product(client, other, {**TAOBAO_ONLY, "slug": "theirs"})

    async def tap(product: dict[str, Any], cookie: str | None = None) -> str:
        headers = {"User-Agent": TAOBAO_UA, **({"Cookie": f"ll_v={cookie}"} if cookie else {})}
        client.session.cookie_jar.clear()
        resp = await client.get(f"/p/{product['code']}?ch=live", headers=headers,
                                allow_redirects=False)
        assert resp.status == 302
        return cookie or resp.cookies["ll_v"].value

    first = await tap(tea)  # 2026-11-30, 12:00 in Shanghai
    # 20:00 UTC is already the next day in Shanghai: the answer says which days it counts.
    clock.set(datetime(2026, 11, 30, 20, 0, tzinfo=UTC))
    await tap(tea, first)
    await tap(tea)
    await tap(theirs)
    period = "from=2026-11-30&to=2026-12-01"
    for by, key in (("platform", "taobao"), ("product", tea["id"]), ("channel", "live")):
        answer = await _stats(client, acme, f"by={by}&{period}")
        row = _by(answer, "product_id" if by == "product" else by)[key]
        assert (row["clicks"], row["unique_visitors"], row["unique_visitors_error"]) == (3, 2, 0)
        assert answer["timezone"] == "Asia/Shanghai"
        assert answer["total"]["unique_visitors"] == 2
    days = _by(await _stats(client, acme, f"by=day&{period}"), "day")
    assert {d: (r["clicks"], r["unique_visitors"]) for d, r in days.items()} == {
        "2026-11-30": (1, 1), "2026-12-01": (2, 2)}
    # A range of one of those days, and another merchant's figures, stay their own.
    assert (await _stats(client, acme, "from=2026-12-01&to=2026-12-01"))["total"][
        "unique_visitors"] == 2
    assert (await _stats(client, other, period))["total"]["unique_visitors"] == 1
    lines = (await (await client.get(f"/api/stats?by=day&{period}&format=csv",
                                   headers=acme.auth)).text()).splitlines()
    assert lines[0].endswith(",timezone") and lines[1].endswith(',"Asia/Shanghai"')

    # The dashboard shows the same figures, and which time zone the days are in.
    await add_user(client, "acme", "anna@example.com")
    assert (await login(client, "anna@example.com")).status == 303

    async def page(url: str) -> tuple[Figures, str]:
        resp = await client.get(url)
        assert resp.status == 200, url
        text = await resp.text()
        return Figures(text), text

    overview, text = await page(f"/dashboard?{period}")
    assert overview.tiles["unique_visitors"] == "2" and "Asia/Shanghai" in text
    assert overview.tables["platform-table"]["taobao"]["unique_visitors"] == "2"
    assert overview.tables["channel-table"]["live"]["unique_visitors"] == "2"
    products, _ = await page(f"/dashboard/products?{period}")
    assert products.tables["product-table"][str(tea["id"])]["unique_visitors"] == "2"
    detail, text = await page(f"/dashboard/products/{tea['id']}?{period}")
    assert detail.tiles["unique_visitors"] == "2" and "Asia/Shanghai" in text
    assert {d: r["unique_visitors"] for d, r in detail.tables["day-table"].items()} == {
        "2026-11-30": "1", "2026-12-01": "2"}


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    url = pg.postgres_url()
    async with pg.fresh_schema(url, create=False) as schema:
        yield pg.with_schema(url, schema)


def _old_journal_line(row: str, fields: dict[str, Any]) -> str:
    """A journal line as a gateway wrote it before outcomes: no ``outcome`` field, and
    "kind" naming the row (a click) or, overwritten by an event's own, the event's kind."""
    return json.dumps({"kind": row, **fields}) + "\n"


async def test_events_replayed_before_their_click_count_under_its_channel(
    aiohttp_client: ClientFactory, tmp_path: Path, storage_url: str,
) -> None:
    """A journal replayed out of order: the storefront open and the add reach storage
    before the click they followed. Once the click is in, they count under its channel,
    platform and product, never under no channel. Old journal lines (no outcome) replay."""
    settings = make_settings(tmp_path, storage__url=storage_url)
    store = await open_store(settings)
    try:
        for merchant in ("acme", "other"):
            await store.create_merchant(Merchant(merchant, merchant.title()))
        tea = await store.create_product("acme", code="tea", title="Tea", targets={
            "taobao": {"item_id": "600000000001"}}, image_url=None, price=None)
    finally:
        await store.close()
    day = datetime.now(UTC).date().isoformat()
    click = {"id": "AAAAAAAAclick001", "merchant_id": "acme", "product_id": tea.id,
             "ts": time.time(), "day": day, "platform": "taobao", "source": "ua",
             "visitor": "AAAAAAAAvisitor1", "ip_hash": "h", "bot": False, "mobile": True,
             "os": "ios", "channel": "live"}
    events = [{"id": f"event{n}", "merchant_id": "acme", "product_id": product, "kind": kind,
               "platform": platform, "ts": time.time(), "day": day,
               "click_id": "AAAAAAAAclick001", "target": None}
              for n, (kind, product, platform) in enumerate([
                  ("storefront_open", tea.id, "taobao"), ("add", None, "unattributed")])]
    journal = settings.data_dir / "journal"
    journal.mkdir(parents=True)
    # Files a stopped process left (an hour old): the events' file is replayed first.
    (journal / "pending-a.jsonl").write_text(
        "".join(_old_journal_line("event", e) for e in events))
    (journal / "pending-b.jsonl").write_text(_old_journal_line("click", click))
    for path in journal.iterdir():
        os.utime(path, (time.time() - 3600,) * 2)
    client = await aiohttp_client(create_app(settings))
    assert client.app is not None
    # The recorder replays the journal as it starts.
    await until(lambda: not any(journal.iterdir()), what="the journal replayed")
    await client.app[RECORDER].flush()
    acme = Tenant("acme", *_tokens(client, "acme"))
    channels = _by(await _stats(client, acme, "by=channel"), "channel")
    assert set(channels) == {"live"}
    assert (channels["live"]["clicks"], channels["live"]["storefront_opens"],
            channels["live"]["adds"]) == (1, 1, 1)
    platforms = _by(await _stats(client, acme, "by=platform"), "platform")
    assert set(platforms) == {"taobao"} and platforms["taobao"]["adds"] == 1
    products = _by(await _stats(client, acme, "by=product"), "product_id")
    assert set(products) == {tea.id} and products[tea.id]["adds"] == 1
    other = Tenant("other", *_tokens(client, "other"))
    assert (await _stats(client, other, "by=channel"))["rows"] == []


def _tokens(client: TestClient[Any, Any], merchant: str) -> tuple[str, str]:
    from gateway.appkeys import TOKENS

    assert client.app is not None
    tokens = client.app[TOKENS]
    return tokens.mint(merchant, "merchant", 3600), tokens.mint(merchant, "marketing", 3600)


async def test_a_version_1_export_still_imports(tmp_path: Path, storage_url: str) -> None:
    """An export written before outcomes (format version 1: clicks without an outcome)
    imports, its visitors counted distinct, beside a merchant already there."""
    lines = [
        {"format": "linkloop-export", "version": 1, "merchant": "old"},
        {"kind": "merchant", "data": {"id": "old", "name": "Old", "domains": [],
                                      "created_at": 1.0}},
        {"kind": "product", "data": {"id": 7, "merchant_id": "old", "code": "oldtea",
                                     "title": "Tea", "targets": {"taobao": {
                                         "item_id": "600000000001"}}, "image_url": None,
                                     "price": None, "status": "active", "created_at": 1.0,
                                     "updated_at": 1.0}},
        *({"kind": "click", "data": {"id": f"click0000000{n}", "merchant_id": "old",
                                     "product_id": 7, "ts": 1.0, "day": day,
                                     "platform": "taobao", "source": "ua", "visitor": visitor,
                                     "ip_hash": "h", "bot": False, "mobile": True,
                                     "os": "ios", "channel": None}}
          for n, (day, visitor) in enumerate([("2026-10-01", "va"), ("2026-10-02", "va"),
                                              ("2026-10-02", "vb")])),
        {"kind": "event", "data": {"id": "event1", "merchant_id": "old", "product_id": 7,
                                   "kind": "storefront_open", "platform": "taobao",
                                   "ts": 1.0, "day": "2026-10-02", "click_id": "click00000002",
                                   "target": "taobao"}},
    ]
    store = await open_store(make_settings(tmp_path, storage__url=storage_url))
    try:
        await store.create_merchant(Merchant("acme", "Acme"))
        counts = await import_merchant(store, [json.dumps(line) + "\n" for line in lines])
        assert (counts["clicks"], counts["events"]) == (3, 1)
        (total,) = await store.stats("old", from_day="2026-10-01", to_day="2026-10-31",
                                     by="total")
        assert (total.clicks, total.unique_visitors, total.storefront_opens,
                total.redirects) == (3, 2, 1, 0)
        (acme,) = await store.stats("acme", from_day="2026-10-01", to_day="2026-10-31",
                                    by="total")
        assert acme.clicks == 0
    finally:
        await store.close()


def test_a_journal_gives_back_events_and_clicks(tmp_path: Path) -> None:
    """An event's own ``kind`` once overwrote the journal's row marker: every journaled
    event was read back as an unreadable line, and lost."""
    from gateway.recorder import Journal
    from gateway.store import Click, Event

    journal = Journal(tmp_path / "journal")
    event = Event("event1", "acme", 1, "storefront_open", "taobao", 1.0, "2026-11-01",
                  "click00000001")
    click = Click("click00000001", "acme", 1, 1.0, "2026-11-01", "taobao", "ua", "v", "h",
                  outcome="redirect")
    journal.append([event, click])
    assert Journal.read(journal.pending) == ([click], [event], 0)


async def test_the_dashboard_rounds_each_rate_once_from_the_counts_it_shows(
    clocked: tuple[TestClient[Any, Any], FakeTime], cli_env: dict[str, str],
) -> None:
    """15 storefront opens of 19 clicks are 78.947%: the API says 0.7895 (4 places), the
    dashboard and ``linkloop stats``' table 78.9%, not 79.0% (0.7895 rounded again).
    Another merchant's rate is its own."""
    client, _clock = clocked
    acme = await add_tenant(client, "acme")
    other = await add_tenant(client, "other")
    tea = await create_product(client, acme)  # Taobao, JD and the web shop
    theirs = await create_product(client, other, {**TAOBAO_ONLY, "slug": "theirs"})

    async def tap(product: dict[str, Any], ua: str) -> None:
        client.session.cookie_jar.clear()
        resp = await client.get(f"/p/{product['code']}?ch=live", headers={"User-Agent": ua},
                                allow_redirects=False)
        assert resp.status in (200, 302)

    for _ in range(15):
        await tap(tea, TAOBAO_UA)  # straight to the Taobao item: a storefront open each
    for _ in range(4):
        await tap(tea, DESKTOP_UA)  # the landing page, left without a hop
    await tap(theirs, TAOBAO_UA)
    answer = await _stats(client, acme, "by=channel")
    live = _by(answer, "channel")["live"]
    assert (live["clicks"], live["storefront_opens"], live["open_rate"]) == (19, 15, 0.7895)
    assert answer["total"]["open_rate"] == 0.7895
    text = await (await client.get("/api/stats?by=channel&format=csv", headers=acme.auth)).text()
    (row,) = csv.DictReader(io.StringIO(text))
    assert (row["open_rate"], row["entry_rate"], row["add_rate"]) == ("0.7895", "0.0", "")

    await add_user(client, "acme", "anna@example.com")
    await add_user(client, "other", "olga@example.com")
    for email, opened in (("anna@example.com", "78.9%"), ("olga@example.com", "100.0%")):
        client.session.cookie_jar.clear()
        assert (await login(client, email)).status == 303
        page = await (await client.get("/dashboard")).text()
        assert Figures(page).tables["channel-table"]["live"]["open_rate"] == opened
        assert f"占点击 {opened}" in page  # the funnel's step
    for merchant, opened in (("acme", "78.9%"), ("other", "100.0%")):
        table = await asyncio.to_thread(
            run, cli_env, "stats", "--merchant", merchant, "--by", "channel", "--table",
            "--channel", "live", "--from", "2026-11-30", "--to", "2026-11-30")
        assert table.returncode == 0, table.stderr
        header, _rule, row_line = table.stdout.splitlines()[1:4]
        assert dict(zip(header.split(), row_line.split(), strict=True))["open_rate"] == opened
    # The CLI's channel filter is the API's: no clicks came through a "kol" link.
    kol = await asyncio.to_thread(run, cli_env, "stats", "--merchant", "acme", "--channel",
                                  "kol", "--from", "2026-11-30", "--to", "2026-11-30")
    assert json.loads(kol.stdout)["rows"] == [] and json.loads(kol.stdout)["total"]["clicks"] == 0


async def test_a_head_request_is_no_persons_click_open_or_entry(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    """Link checkers, unfurlers and mail scanners ask with HEAD, often in a browser's or an
    app's User-Agent; aiohttp routes HEAD to each GET handler. Such a request counts as a
    bot's click (bot_clicks only): no click, visitor, redirect, open or entry of a person's.
    A GET of another merchant's link meanwhile counts as ever."""
    other = await add_tenant(client, "other")
    tea = await create_product(client, tenant)  # Taobao, JD and the web shop
    theirs = await create_product(client, other, {**TAOBAO_ONLY, "slug": "theirs"})
    entry = await client.put("/api/entry", headers=tenant.auth, json={
        "kind": "static", "qr_url": "https://img.example.com/q.png"})
    assert entry.status == 200, await entry.text()
    for path, ua in ((f"/p/{tea['code']}?ch=live", TAOBAO_UA),
                     (f"/o/{tea['code']}/web", DESKTOP_UA), (f"/e/{tea['code']}", WECHAT_UA)):
        client.session.cookie_jar.clear()
        resp = await client.head(path, headers={"User-Agent": ua}, allow_redirects=False)
        assert resp.status < 400, path  # the link answers: a checker sees it alive
    client.session.cookie_jar.clear()
    assert (await client.get(f"/p/{theirs['code']}", headers={"User-Agent": TAOBAO_UA},
                             allow_redirects=False)).status == 302
    total = (await _stats(client, tenant, "by=channel"))["total"]
    assert {m: total[m] for m in ("clicks", "unique_visitors", "bot_clicks", "redirects",
                                  "storefront_opens", "entries")} == {
        "clicks": 0, "unique_visitors": 0, "bot_clicks": 1, "redirects": 0,
        "storefront_opens": 0, "entries": 0}
    theirs_row = _by(await _stats(client, other, "by=platform"), "platform")["taobao"]
    assert (theirs_row["clicks"], theirs_row["redirects"], theirs_row["bot_clicks"]) == (1, 1, 0)


async def test_every_table_shows_an_estimates_margin(
    clocked: tuple[TestClient[Any, Any], FakeTime],
) -> None:
    """Past 256 visitors a figure is an estimate: the products and channels tables show
    its margin (``1,234 ±40``) as the overview does, not a bare number that reads as exact.
    Another merchant's few visitors stay exact."""
    client, _clock = clocked
    assert client.app is not None
    acme = await add_tenant(client, "acme")
    other = await add_tenant(client, "other")
    tea = await create_product(client, acme)
    theirs = await create_product(client, other, {**TAOBAO_ONLY, "slug": "theirs"})
    store = client.app[STORE]
    for merchant in ("acme", "other"):
        await store.create_channel(Channel(merchant, "live", "直播间"))
    day = "2026-11-30"  # the clock's today
    crowd = [Click(f"AAAAcrowd{n:07d}", "acme", tea["id"], 1.0, day, "taobao", "ua",
                   f"AAAAvisitor{n:06d}", "h", channel="live", outcome="redirect")
             for n in range(400)]
    few = [Click(f"BBBBfew{n:09d}", "other", theirs["id"], 1.0, day, "taobao", "ua",
                 f"BBBBvisitor{n:06d}", "h", channel="live", outcome="redirect")
           for n in range(3)]
    await store.record([*crowd, *few], [])
    for merchant, email in (("acme", "anna@example.com"), ("other", "olga@example.com")):
        await add_user(client, merchant, email, role="merchant")
    for email, tenant, product in (("anna@example.com", acme, tea),
                                   ("olga@example.com", other, theirs)):
        row = _by(await _stats(client, tenant, "by=channel"), "channel")["live"]
        margin = row["unique_visitors_error"]
        assert (margin > 0) == (tenant is acme)
        want = f"{row['unique_visitors']:,}" + (f" ±{margin:,}" if margin else "")
        client.session.cookie_jar.clear()
        assert (await login(client, email)).status == 303
        overview = Figures(await (await client.get("/dashboard")).text())
        assert overview.tables["channel-table"]["live"]["unique_visitors"] == want
        products = Figures(await (await client.get("/dashboard/products")).text())
        assert products.tables["product-table"][str(product["id"])]["unique_visitors"] == want
        channels = Figures(await (await client.get("/dashboard/channels")).text())
        assert channels.tables["channel-table"]["live"]["unique_visitors"] == want


async def test_an_estimate_of_visitors_is_never_more_than_the_clicks(
        tmp_path: Path, storage_url: str) -> None:
    # Past 256 people the visitors are an estimate: 1,000 people with a click each are
    # estimated at 1,007 (±33), 300 at 302. No more people than clicks can have come, and
    # the clicks are exact: "1,007 visitors of 1,000 clicks" is what an analyst was shown.
    store = await open_store(make_settings(tmp_path, storage__url=storage_url))
    people = {"m1": 1000, "m2": 300}
    try:
        for merchant in people:
            await store.create_merchant(Merchant(merchant, merchant.upper()))
        await store.record([Click(f"{m}-{n:05d}", m, 1, 1.0, "2026-11-01", "taobao", "ua",
                                  f"v{n}", "h") for m, count in people.items()
                            for n in range(count)], [])
        for merchant, count in people.items():
            for by in ("platform", "total"):
                (row,) = await store.stats(merchant, from_day="2026-11-01",
                                           to_day="2026-11-01", by=by)
                assert (row.clicks, row.unique_visitors) == (count, count), (merchant, by)
                assert row.unique_visitors_error > 0  # still said to be an estimate
    finally:
        await store.close()
