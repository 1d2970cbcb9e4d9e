"""Tenant isolation on every read and write of the storage contract, on both engines.

Two merchants hold data shaped alike (the same days, platforms, channels, entry-way
platforms, credential platforms, callback nonces, group members and visitors), in
different amounts, so a query that forgot its ``merchant_id`` filter answers with the
other merchant's rows or figures. Expected figures are computed here, from the rows the
test wrote, never by the code under test.

``test_every_contract_method_has_an_isolation_case`` reads the ``Store`` contract: a new
method that takes a merchant (a ``merchant_id`` or a record carrying one) fails it until
a case is added here, and only methods that take no merchant may be listed as unscoped.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import typing
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.store import (
    COUNTERS,
    METRICS,
    Channel,
    Click,
    CodeTaken,
    Contact,
    Credentials,
    Entry,
    EntryWay,
    Event,
    Merchant,
    MerchantExists,
    MintedLink,
    NewProduct,
    StatsRow,
    Store,
    User,
)
from gateway.store.postgres import PostgresStore
from gateway.store.rollup import SKETCH_KINDS, sketch_cells
from gateway.store.sketch import add_hashes
from gateway.store.sqlite import SQLiteStore

from . import pg

# --- the two tenants' data -----------------------------------------------------------------
#: Days either side of a whole month, so a by-product range reads the day rollups before
#: and after the month and the monthly rollups in between (see gateway/store/sql.py).
DAYS = ("2026-10-30", "2026-11-01", "2026-11-15", "2026-11-30", "2026-12-02")
WIDE = ("2026-10-15", "2026-12-10")
NARROW = ("2026-11-01", "2026-11-15")
GROUPINGS = ("platform", "product", "day", "channel")


@dataclass
class Tenant:
    id: str
    products: list[int] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class Seed:
    m1: Tenant
    m2: Tenant
    #: A merchant with nothing at all: every read of it is empty.
    m3: str = "m3"

    @property
    def tenants(self) -> tuple[Tenant, Tenant]:
        return (self.m1, self.m2)


def _clicks(tenant: Tenant, weight: int, platforms: tuple[str, ...],
            channels: tuple[str | None, ...]) -> None:
    """``weight`` sets how many clicks each cell gets, so the tenants' figures differ."""
    n = 0
    for d, day in enumerate(DAYS):
        for p, platform in enumerate(platforms):
            for c, channel in enumerate(channels):
                product = tenant.products[(d + p + c) % len(tenant.products)]
                for k in range(weight + (d + p + c) % 2):
                    n += 1
                    # Visitor ids repeat across tenants (one ll_v cookie per gateway host,
                    # whichever merchant's link a shopper taps), never within one.
                    tenant.clicks.append(Click(
                        id=f"{tenant.id}c{n:05d}", merchant_id=tenant.id, product_id=product,
                        ts=1_700_000_000.0 + n, day=day, platform=platform, source="ua",
                        visitor=f"v{n:05d}", ip_hash="h", bot=k == 2, channel=channel))


def _events(tenant: Tenant, every: int) -> None:
    for n, click in enumerate(tenant.clicks):
        if click.bot:
            continue
        kind = ("storefront_open", "entry", "add")[n % 3]
        if n % every == 0:
            tenant.events.append(Event(
                id=f"{tenant.id}e{n:05d}", merchant_id=tenant.id, product_id=click.product_id,
                kind=kind, platform=click.platform, ts=click.ts + 1, day=click.day,
                click_id=click.id, target="taobao" if kind == "storefront_open" else None))
    # An add whose state could not be traced: no product, no click.
    tenant.events.append(Event(id=f"{tenant.id}e99998", merchant_id=tenant.id,
                               product_id=None, kind="add", platform="wechat",
                               ts=1_700_100_000.0, day=DAYS[2]))


async def seed(store: Store) -> Seed:
    for merchant_id, name in (("m1", "One"), ("m2", "Two"), ("m3", "Three")):
        await store.create_merchant(Merchant(merchant_id, name, (f"{merchant_id}.example.com",)))
    m1, m2 = Tenant("m1"), Tenant("m2")
    # Interleaved, so product ids alternate between the tenants.
    for n, tenant in enumerate((m1, m2, m1, m2)):
        product = await store.create_product(
            tenant.id, code=f"{tenant.id}code{n}", title=f"{tenant.id} tea {n}",
            targets={"taobao": {"item_id": f"60000000000{n}"}}, image_url=None, price="1.00")
        tenant.products.append(product.id)
    _clicks(m1, 1, ("taobao", "wechat"), (None, "live"))
    _clicks(m2, 3, ("taobao", "wechat", "douyin"), (None, "live", "poster"))
    _events(m1, 2)
    _events(m2, 1)
    # m1's add that names one of m2's clicks (tagged "live"): it must not take m2's channel.
    m2_live = next(c for c in m2.clicks if c.channel == "live" and not c.bot)
    m1.events.append(Event(id="m1e99999", merchant_id="m1", product_id=m1.products[0],
                           kind="add", platform="taobao", ts=1_700_100_001.0, day=DAYS[1],
                           click_id=m2_live.id))
    # One batch holding both tenants' rows, as the recorder writes them.
    await store.record([*m1.clicks, *m2.clicks], [*m1.events, *m2.events])
    for tenant, platforms in ((m1, ("douyin", "wechat")), (m2, ("taobao", "wechat"))):
        await store.put_entry(Entry(tenant.id, "contact_way", {"users": [f"{tenant.id}-sales"]},
                                    {"corp_id": f"ww{tenant.id}", "secret": f"s-{tenant.id}"}))
        for platform in platforms:
            await store.put_entry_way(EntryWay(tenant.id, platform, f"{tenant.id}-{platform}",
                                               f"https://qr/{tenant.id}/{platform}",
                                               f"st-{tenant.id}-{platform}"))
        await store.put_credentials(Credentials(tenant.id, "wechat_miniprogram",
                                                f"wx{tenant.id}", f"secret-{tenant.id}"))
        for who in ("anna", "bo"):
            await store.create_user(User(f"{who}@{tenant.id}.cn", tenant.id, "marketing",
                                         "pbkdf2$x"))
    return Seed(m1, m2)


# --- the oracle: figures worked out from the rows written ------------------------------------
def expected_stats(tenant: Tenant, *, from_day: str, to_day: str, by: str,
                   product_id: int | None = None, platform: str | None = None,
                   channel: str | None = None) -> dict[Any, tuple[int, ...]]:
    """What the stats must say for ``tenant``: key -> counts in METRICS order."""
    channel_of = {c.id: c.channel or "" for c in tenant.clicks}  # this tenant's clicks only
    cells: list[tuple[int, str, str, str, str, str | None]] = []  # product, day, platform, ch, metric, visitor
    for click in tenant.clicks:
        cells.append((click.product_id, click.day, click.platform, click.channel or "",
                      "bot_clicks" if click.bot else "clicks",
                      None if click.bot or not click.visitor else click.visitor))  # "": forgotten
    counter = {"storefront_open": "storefront_opens", "entry": "entries", "add": "adds"}
    for event in tenant.events:
        ch = channel_of.get(event.click_id, "") if event.click_id else ""
        cells.append((event.product_id or 0, event.day, event.platform, ch,
                      counter[event.kind], None))
    figures: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    seen: set[tuple[int, str, str, str]] = set()
    for product, day, plat, ch, metric, visitor in cells:
        if not from_day <= day <= to_day:
            continue
        if ((product_id is not None and product != product_id)
                or (platform is not None and plat != platform)
                or (channel is not None and ch != channel)):
            continue
        key = {"platform": plat, "product": product or None, "day": day, "channel": ch}[by]
        row = figures[key]
        row[metric] += 1
        if visitor is not None and (product, day, plat, visitor) not in seen:
            seen.add((product, day, plat, visitor))
            row["unique_visitors"] += 1
    return {key: tuple(row[m] for m in METRICS) for key, row in figures.items()}


def as_figures(rows: Iterable[StatsRow], by: str) -> dict[Any, tuple[int, ...]]:
    key = "product_id" if by == "product" else by
    return {row.key[key]: tuple(getattr(row, m) for m in METRICS) for row in rows}


# --- one case per contract method -----------------------------------------------------------
Case = Callable[[Store, Seed], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


@case
async def create_merchant(store: Store, seed: Seed) -> None:
    with pytest.raises(MerchantExists):
        await store.create_merchant(Merchant("m1", "Taken over"))
    await store.create_merchant(Merchant("m4", "Four"))
    assert (await store.get_merchant("m1")).name == "One"  # type: ignore[union-attr]


@case
async def get_merchant(store: Store, seed: Seed) -> None:
    for merchant_id, name in (("m1", "One"), ("m2", "Two"), ("m3", "Three")):
        got = await store.get_merchant(merchant_id)
        assert got is not None and (got.id, got.name) == (merchant_id, name)
        assert got.domains == (f"{merchant_id}.example.com",)
    assert await store.get_merchant("m9") is None


@case
async def create_product(store: Store, seed: Seed) -> None:
    made = await store.create_product("m2", code="m2new", title="New", targets={},
                                      image_url=None, price=None)
    assert made.merchant_id == "m2"
    assert await store.get_product("m1", made.id) is None
    assert [p.id for p in await store.list_products("m2", limit=10)] == [*seed.m2.products,
                                                                         made.id]
    with pytest.raises(CodeTaken):  # share codes are one namespace: links are global
        await store.create_product("m1", code="m2new", title="Mine", targets={},
                                   image_url=None, price=None)


@case
async def get_product(store: Store, seed: Seed) -> None:
    for tenant, other in ((seed.m1, seed.m2), (seed.m2, seed.m1)):
        for product_id in tenant.products:
            got = await store.get_product(tenant.id, product_id)
            assert got is not None and got.merchant_id == tenant.id
            assert await store.get_product(other.id, product_id) is None
            assert await store.get_product(seed.m3, product_id) is None


@case
async def list_products(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        assert [p.id for p in await store.list_products(tenant.id, limit=10)] == tenant.products
        # A page boundary that lies between the other tenant's ids.
        page = await store.list_products(tenant.id, limit=10, after_id=tenant.products[0])
        assert [p.id for p in page] == tenant.products[1:]
    assert await store.list_products(seed.m3, limit=10) == []
    # A page's size, a search (in any case) and a state keep to the tenant too.
    now = time.time()
    ended = await store.create_product("m2", code="m2ended", title="m2 tea ended", targets={},
                                       image_url=None, price=None, valid_until=now - 60)
    for tenant, extra in ((seed.m1, []), (seed.m2, [ended.id])):
        every = [*tenant.products, *extra]
        assert [p.id for p in await store.list_products(tenant.id, limit=1)] == every[:1]
        found = await store.list_products(tenant.id, limit=10, search=f"{tenant.id.upper()} TEA")
        assert [p.id for p in found] == every
        assert await store.list_products(tenant.id, limit=10, search="m9 tea") == []
        live = await store.list_products(tenant.id, limit=10, state="live", now=now)
        assert [p.id for p in live] == tenant.products
        gone = await store.list_products(tenant.id, limit=10, state="ended", now=now)
        assert [p.id for p in gone] == extra


@case
async def update_product(store: Store, seed: Seed) -> None:
    theirs = seed.m2.products[0]
    assert await store.update_product("m1", theirs, {"title": "stolen",
                                                     "status": "retired"}) is None
    untouched = await store.get_product("m2", theirs)
    assert untouched is not None and untouched.title == "m2 tea 1" and not untouched.retired
    mine = await store.update_product("m1", seed.m1.products[0], {"title": "renamed"})
    assert mine is not None and mine.title == "renamed" and mine.merchant_id == "m1"


@case
async def export_clicks(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        assert list(await store.export_clicks(tenant.id, after="", limit=10_000)) == sorted(
            tenant.clicks, key=lambda c: c.id)
        first = await store.export_clicks(tenant.id, after="", limit=3)
        assert len(first) == 3
        rest = await store.export_clicks(tenant.id, after=first[-1].id, limit=10_000)
        assert [c.id for c in [*first, *rest]] == sorted(c.id for c in tenant.clicks)
    assert await store.export_clicks(seed.m3, after="", limit=10) == []


@case
async def export_events(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        assert list(await store.export_events(tenant.id, after="", limit=10_000)) == sorted(
            tenant.events, key=lambda e: e.id)
        first = await store.export_events(tenant.id, after="", limit=3)
        rest = await store.export_events(tenant.id, after=first[-1].id, limit=10_000)
        assert len(first) == 3
        assert [e.id for e in [*first, *rest]] == sorted(e.id for e in tenant.events)
    assert await store.export_events(seed.m3, after="", limit=10) == []


@case
async def record(store: Store, seed: Seed) -> None:
    # A second batch for m2 only, replaying m1's rows too: m1's figures stay as they were.
    before = await store.stats("m1", from_day=WIDE[0], to_day=WIDE[1], by="platform")
    extra = [c._replace(id=f"{c.id}x") for c in seed.m2.clicks[:5]]
    await store.record([*seed.m1.clicks, *extra], seed.m1.events)
    assert await store.stats("m1", from_day=WIDE[0], to_day=WIDE[1], by="platform") == before
    seed.m2.clicks.extend(extra)
    assert as_figures(await store.stats("m2", from_day=WIDE[0], to_day=WIDE[1],
                                        by="platform"), "platform") == expected_stats(
        seed.m2, from_day=WIDE[0], to_day=WIDE[1], by="platform")


@case
async def click_origin(store: Store, seed: Seed) -> None:
    for tenant, other in ((seed.m1, seed.m2), (seed.m2, seed.m1)):
        for click in tenant.clicks[:3]:
            assert await store.click_origin(tenant.id, click.id) == (click.product_id,
                                                                     click.platform)
            assert await store.click_origin(other.id, click.id) is None


@case
async def stats(store: Store, seed: Seed) -> None:
    filters: list[dict[str, Any]] = [
        {}, {"platform": "wechat"}, {"platform": "douyin"}, {"channel": "live"},
        {"channel": ""}, {"channel": "poster"}, {"platform": "taobao", "channel": "live"}]
    checked = 0
    for tenant, other in ((seed.m1, seed.m2), (seed.m2, seed.m1)):
        product_filters = [{"product_id": p} for p in (*tenant.products, *other.products)]
        for from_day, to_day in (WIDE, NARROW):
            for by in GROUPINGS:
                for given in [*filters, *product_filters]:
                    got = as_figures(await store.stats(tenant.id, from_day=from_day,
                                                       to_day=to_day, by=by, **given), by)
                    want = expected_stats(tenant, from_day=from_day, to_day=to_day, by=by,
                                          **given)
                    assert got == want, (tenant.id, from_day, to_day, by, given)
                    checked += bool(want)
    assert checked > 100  # most combinations have figures: a leak would show
    for by in GROUPINGS:
        assert await store.stats(seed.m3, from_day=WIDE[0], to_day=WIDE[1], by=by) == []
    # By product, each row is titled with its own product (and untraced adds have none).
    rows = await store.stats("m1", from_day=WIDE[0], to_day=WIDE[1], by="product")
    assert [(r.key["product_id"], r.key["title"]) for r in rows] == [
        (None, None), *((p, f"m1 tea {n}") for p, n in zip(seed.m1.products, (0, 2),
                                                             strict=True))]


@case
async def put_credentials(store: Store, seed: Seed) -> None:
    await store.put_credentials(Credentials("m1", "wechat_miniprogram", "wxnew", "new-secret"))
    theirs = await store.get_credentials("m2", "wechat_miniprogram")
    assert theirs is not None and (theirs.app_id, theirs.secret) == ("wxm2", "secret-m2")
    mine = await store.get_credentials("m1", "wechat_miniprogram")
    assert mine is not None and (mine.app_id, mine.secret) == ("wxnew", "new-secret")


@case
async def get_credentials(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        got = await store.get_credentials(tenant.id, "wechat_miniprogram")
        assert got is not None and (got.merchant_id, got.platform, got.app_id, got.secret) == (
            tenant.id, "wechat_miniprogram", f"wx{tenant.id}", f"secret-{tenant.id}")
        assert got.updated_at > 1_700_000_000  # when they were saved
    assert await store.get_credentials(seed.m3, "wechat_miniprogram") is None


@case
async def list_credentials(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        listed = await store.list_credentials(tenant.id)
        assert [(c.merchant_id, c.platform, c.app_id, c.secret) for c in listed] == [
            (tenant.id, "wechat_miniprogram", f"wx{tenant.id}", f"secret-{tenant.id}")]
        assert all(c.updated_at > 1_700_000_000 for c in listed)
    assert await store.list_credentials(seed.m3) == []


@case
async def put_entry(store: Store, seed: Seed) -> None:
    # A new entry forgets the ways made for the merchant's previous one, and only those.
    before = time.time()
    await store.put_entry(Entry("m1", "group", {"chat_ids": ["wr1"]}, {}))
    assert await store.list_entry_ways("m1") == []
    mine = await store.get_entry("m1")  # the console says when the entry last changed
    assert mine is not None and mine.kind == "group" and mine.updated_at >= before
    assert [w.platform for w in await store.list_entry_ways("m2")] == ["taobao", "wechat"]
    theirs = await store.get_entry("m2")
    assert theirs is not None and theirs.kind == "contact_way"
    assert theirs.secrets == {"corp_id": "wwm2", "secret": "s-m2"}


@case
async def get_entry(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        got = await store.get_entry(tenant.id)
        assert got is not None and got.merchant_id == tenant.id
        assert got.config == {"users": [f"{tenant.id}-sales"]}
        assert got.secrets == {"corp_id": f"ww{tenant.id}", "secret": f"s-{tenant.id}"}
    assert await store.get_entry(seed.m3) is None


@case
async def get_entry_way(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        way = await store.get_entry_way(tenant.id, "wechat")
        assert way is not None and (way.merchant_id, way.config_id) == (
            tenant.id, f"{tenant.id}-wechat")
    # Each has a platform the other lacks.
    assert await store.get_entry_way("m1", "taobao") is None
    assert await store.get_entry_way("m2", "douyin") is None
    assert await store.get_entry_way(seed.m3, "wechat") is None


@case
async def put_entry_way(store: Store, seed: Seed) -> None:
    # m2 already has a taobao way; m1's first one is m1's, not "the one already there".
    made = await store.put_entry_way(EntryWay("m1", "taobao", "m1-taobao", "https://qr/x", "s"))
    assert (made.merchant_id, made.config_id) == ("m1", "m1-taobao")
    # Both have a wechat way: a second one for either keeps that merchant's own.
    for tenant in ("m1", "m2"):
        kept = await store.put_entry_way(EntryWay(tenant, "wechat", "again", "https://qr/y", "t"))
        assert (kept.merchant_id, kept.config_id) == (tenant, f"{tenant}-wechat")
    again = await store.put_entry_way(EntryWay("m1", "taobao", "again", "https://qr/z", "u"))
    assert (again.merchant_id, again.config_id) == ("m1", "m1-taobao")


@case
async def list_entry_ways(store: Store, seed: Seed) -> None:
    for tenant, platforms in ((seed.m1, ["douyin", "wechat"]), (seed.m2, ["taobao", "wechat"])):
        ways = await store.list_entry_ways(tenant.id)
        assert [(w.merchant_id, w.platform, w.config_id) for w in ways] == [
            (tenant.id, p, f"{tenant.id}-{p}") for p in platforms]
    assert await store.list_entry_ways(seed.m3) == []


@case
async def accept_callback(store: Store, seed: Seed) -> None:
    # Nonces are per merchant: the same nonce from another merchant's callback is no replay.
    assert await store.accept_callback("m1", "nonce-1", "<xml>m1</xml>")
    assert await store.accept_callback("m2", "nonce-1", "<xml>m2</xml>")
    assert not await store.accept_callback("m1", "nonce-1", "<xml>m1 again</xml>")
    assert [(i.merchant_id, i.message) for i in await store.pending_callbacks(10)] == [
        ("m1", "<xml>m1</xml>"), ("m2", "<xml>m2</xml>")]


@case
async def add_group_member(store: Store, seed: Seed) -> None:
    assert await store.add_group_member("m1", "wr-1", "wm-a")
    assert await store.add_group_member("m2", "wr-1", "wm-a")  # counts for m2 too
    assert not await store.add_group_member("m1", "wr-1", "wm-a")
    assert not await store.add_group_member("m2", "wr-1", "wm-a")


@case
async def create_user(store: Store, seed: Seed) -> None:
    made = await store.create_user(User("cy@m2.cn", "m2", "merchant", "pbkdf2$y"))
    assert made.merchant_id == "m2"
    assert "cy@m2.cn" not in [u.email for u in await store.list_users("m1")]
    got = await store.get_user("cy@m2.cn")
    assert got is not None and got.merchant_id == "m2"


@case
async def list_users(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        assert [(u.email, u.merchant_id) for u in await store.list_users(tenant.id)] == [
            (f"anna@{tenant.id}.cn", tenant.id), (f"bo@{tenant.id}.cn", tenant.id)]
    assert await store.list_users(seed.m3) == []


def _minted(merchant_id: str, code: str, value: str) -> MintedLink:
    return MintedLink(merchant_id=merchant_id, code=code, kind="url_link", fingerprint="f",
                      value=value, expires_at=2e9, due_at=1e9)


@case
async def put_minted(store: Store, seed: Seed) -> None:
    await store.put_minted(_minted("m1", "m1code0", "https://wxaurl.cn/one"))
    # Another merchant's row for a code it does not own: neither replaces nor adds a row.
    await store.put_minted(_minted("m2", "m1code0", "https://wxaurl.cn/theirs"))
    await store.put_minted(_minted("m2", "m1code2", "https://wxaurl.cn/theirs"))
    assert [m.value for m in await store.minted("m1", "m1code0")] == ["https://wxaurl.cn/one"]
    assert await store.minted("m1", "m1code2") == []
    assert await store.minted("m2", "m1code0") == []
    assert await store.minted_values(["m1code0", "m1code2"], 1.5e9) == {
        "m1code0": {"url_link": "https://wxaurl.cn/one"}}


@case
async def minted(store: Store, seed: Seed) -> None:
    await store.put_minted(_minted("m1", "m1code0", "https://wxaurl.cn/one"))
    await store.put_minted(_minted("m2", "m2code1", "https://wxaurl.cn/two"))
    assert [m.value for m in await store.minted("m1", "m1code0")] == ["https://wxaurl.cn/one"]
    assert [m.value for m in await store.minted("m2", "m2code1")] == ["https://wxaurl.cn/two"]
    assert await store.minted("m2", "m1code0") == []
    assert await store.minted(seed.m3, "m1code0") == []


@case
async def forget_minted(store: Store, seed: Seed) -> None:
    await store.put_minted(_minted("m1", "m1code0", "https://wxaurl.cn/one"))
    await store.forget_minted("m2", "m1code0")  # not m2's code: nothing goes
    assert [m.value for m in await store.minted("m1", "m1code0")] == ["https://wxaurl.cn/one"]
    await store.forget_minted("m1", "m1code0")
    assert await store.minted("m1", "m1code0") == []


@case
async def forget_visitor(store: Store, seed: Seed) -> None:
    before = {t.id: await store.stats(t.id, from_day=WIDE[0], to_day=WIDE[1], by="day")
              for t in seed.tenants}
    visitor = seed.m1.clicks[0].visitor  # m2 has a visitor of that id too
    assert any(c.visitor == visitor for c in seed.m2.clicks)
    gone = await store.forget_visitor(visitor, "m1")
    assert list(gone) == ["m1"] and gone["m1"]["clicks"] == sum(
        c.visitor == visitor for c in seed.m1.clicks)
    assert gone["m1"]["events"] == _events_of(seed.m1, visitor) > 0
    left = {t.id: {c.visitor for c in await store.export_clicks(t.id, after="", limit=10_000)}
            for t in seed.tenants}
    assert visitor not in left["m1"] and visitor in left["m2"]
    assert await store.forget_visitor(visitor, seed.m3) == {}
    # Counts are sums: forgetting changes none. m1's unique visitors (exact here) lose the
    # visitor on their days; no one else's figures change.
    days = {c.day for c in seed.m1.clicks if c.visitor == visitor and not c.bot}
    assert days and gone["m1"]["sketches_cleaned"] > 0
    for tenant in seed.tenants:
        expected = before[tenant.id] if tenant.id != "m1" else [
            replace(row, unique_visitors=row.unique_visitors - (row.key["day"] in days))
            for row in before[tenant.id]]
        assert await store.stats(tenant.id, from_day=WIDE[0], to_day=WIDE[1],
                                 by="day") == expected
    # For the checks after every case: the clicks count, the visitor no more.
    _forgotten(seed.m1, visitor)
    # m1's add names a click of m2's (a state crossed between merchants): forgetting that
    # shopper for m2 takes m2's rows, never m1's event.
    crossed_click = next(e.click_id for e in seed.m1.events if e.id == "m1e99999")
    crossed = next(c.visitor for c in seed.m2.clicks if c.id == crossed_click)
    gone = await store.forget_visitor(crossed, "m2")
    assert list(gone) == ["m2"] and gone["m2"]["events"] == _events_of(seed.m2, crossed) > 0
    assert "m1e99999" in {e.id for e in await store.export_events("m1", after="", limit=10_000)}
    _forgotten(seed.m2, crossed)
    # Everywhere (``linkloop privacy forget --all-merchants``): m2's rows of the first
    # visitor go too, and m1 has none left to give.
    gone = await store.forget_visitor(visitor, None)
    assert list(gone) == ["m2"] and gone["m2"]["clicks"] == sum(
        c.visitor == visitor for c in seed.m2.clicks)
    assert gone["m2"]["events"] == _events_of(seed.m2, visitor)
    assert visitor not in {c.visitor for c in await store.export_clicks("m2", after="",
                                                                        limit=10_000)}
    _forgotten(seed.m2, visitor)


def _events_of(tenant: Tenant, visitor: str) -> int:
    """How many of the tenant's events follow a click of that visitor."""
    clicks = {c.id for c in tenant.clicks if c.visitor == visitor}
    return sum(e.click_id in clicks for e in tenant.events)


def _forgotten(tenant: Tenant, visitor: str) -> None:
    """The seed as it stands once the visitor is forgotten: their clicks still count (in
    the rollups), their visitor id is gone (for the checks after every case)."""
    tenant.clicks[:] = [c._replace(visitor="") if c.visitor == visitor else c
                        for c in tenant.clicks]


@case
async def export_rollups(store: Store, seed: Seed) -> None:
    before = NARROW[1]
    for tenant in seed.tenants:
        rows, sketches = await store.export_rollups(tenant.id, before_day=before)
        assert rows and {key[0] for key, _counts in rows} == {tenant.id}
        assert sketches and {cell[0] for cell, _sketch in sketches} == {tenant.id}
        assert all(cell[2] < before for cell, _sketch in sketches)
        # Each part of a row's key in its place: the rows summed by product, day, platform
        # and channel in turn give that grouping's figures.
        for at, by in enumerate(("product", "day", "platform", "channel"), start=1):
            summed: dict[Any, list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
            for key, counts in rows:
                group = key[at] or None if by == "product" else key[at]
                summed[group] = [a + b for a, b in zip(summed[group], counts, strict=True)]
            want = expected_stats(tenant, from_day=WIDE[0], to_day="2026-11-14", by=by)
            assert {group: tuple(c) for group, c in summed.items()} == {
                group: tuple(v for m, v in zip(METRICS, figures, strict=True) if m in COUNTERS)
                for group, figures in want.items()}, by
        # A sketch cell's key: (merchant, kind, period, product, platform, channel), each
        # dimension the kind does not keep summed (product 0, platform '').
        platforms = {c.platform for c in tenant.clicks}
        for cell, _sketch in sketches:
            assert len(cell) == 6 and cell[1] in SKETCH_KINDS, cell
            keeps_product, keeps_platform, grain = SKETCH_KINDS[cell[1]]
            assert len(cell[2]) == (10 if grain == "day" else 7), cell
            assert cell[3] in (tenant.products if keeps_product else [0]), cell
            assert cell[4] in (platforms if keeps_platform else {""}), cell
            assert cell[5] in {c.channel or "" for c in tenant.clicks}, cell
    assert await store.export_rollups(seed.m3, before_day=before) == ([], [])


@case
async def add_rollups(store: Store, seed: Seed) -> None:
    # A day before the seeded ones (as an import of pruned days brings): m1's alone.
    day = "2026-01-05"
    product = seed.m1.products[0]
    # Each counter its own figure; the clicks (4) at least the 3 visitors, as in any real
    # day (a visitor comes by a click, and an estimate is never shown above the clicks).
    counts = tuple(range(4, len(COUNTERS) + 4))
    visitors = [Click(id=f"old{n}", merchant_id="m1", product_id=product, ts=1.0, day=day,
                      platform="taobao", source="ua", visitor=f"old-visitor-{n}",
                      ip_hash="h") for n in range(3)]
    sketches = [(cell, add_hashes(None, hashes))
                for cell, hashes in sketch_cells(visitors).items()]
    await store.add_rollups([(("m1", product, day, "taobao", ""), counts)], sketches)
    want = dict(zip(COUNTERS, counts, strict=True)) | {"unique_visitors": 3}
    for by in GROUPINGS:
        got = as_figures(await store.stats("m1", from_day=day, to_day=day, by=by), by)
        key = {"platform": "taobao", "product": product, "day": day, "channel": ""}[by]
        assert got == {key: tuple(want[m] for m in METRICS)}, by
        assert await store.stats("m2", from_day=day, to_day=day, by=by) == []


@case
async def create_products(store: Store, seed: Seed) -> None:
    made = await store.create_products("m2", [NewProduct("m2bulk1", "Bulk", {}),
                                              NewProduct("m2bulk2", "Bulk", {})])
    assert {p.merchant_id for p in made} == {"m2"}
    assert [p.id for p in await store.list_products("m1", limit=10)] == seed.m1.products
    for product in made:
        assert await store.get_product("m1", product.id) is None
    with pytest.raises(CodeTaken):  # one of m1's codes: nothing of the batch is written
        await store.create_products("m2", [NewProduct("m2bulk3", "Bulk", {}),
                                           NewProduct("m1code0", "Taken", {})])
    assert await store.link("m2bulk3") is None
    assert (await store.link("m1code0")).merchant_id == "m1"  # type: ignore[union-attr]


@case
async def create_channel(store: Store, seed: Seed) -> None:
    await store.create_channel(Channel("m1", "live", "One's live"))
    await store.create_channel(Channel("m2", "live", "Two's live"))  # the same name: theirs
    assert [c.label for c in await store.list_channels("m1")] == ["One's live"]
    assert [c.label for c in await store.list_channels("m2")] == ["Two's live"]


@case
async def list_channels(store: Store, seed: Seed) -> None:
    await store.create_channel(Channel("m1", "poster"))
    assert [c.name for c in await store.list_channels("m1")] == ["poster"]
    assert await store.list_channels("m2") == []
    assert await store.list_channels(seed.m3) == []


@case
async def delete_channel(store: Store, seed: Seed) -> None:
    for tenant in seed.tenants:
        await store.create_channel(Channel(tenant.id, "live"))
    assert await store.delete_channel("m1", "live")
    assert [c.name for c in await store.list_channels("m2")] == ["live"]
    assert not await store.delete_channel(seed.m3, "live")


@case
async def update_merchant(store: Store, seed: Seed) -> None:
    changed = await store.update_merchant("m1", name="One Tea", domains=["one.example.cn"])
    assert changed is not None and changed.id == "m1"
    two = await store.get_merchant("m2")
    assert two is not None and (two.name, two.domains) == ("Two", ("m2.example.com",))
    assert await store.update_merchant("m9", name="Nobody") is None


@case
async def put_contact(store: Store, seed: Seed) -> None:
    clicked = seed.m1.clicks[1].id  # the click the add came from: its chats count there
    await store.put_contact(Contact("m1", "sales", "wmEXT1", "douyin", seed.m1.products[0],
                                    clicked))
    # The same staff member and external user at another merchant: its own contact.
    theirs = await store.put_contact(Contact("m2", "sales", "wmEXT1", "taobao", None))
    assert (theirs.merchant_id, theirs.platform) == ("m2", "taobao")
    mine = await store.get_contact("m1", "sales", "wmEXT1")
    assert mine is not None and (mine.platform, mine.product_id, mine.click_id) == (
        "douyin", seed.m1.products[0], clicked)
    assert mine.added_at > 1_700_000_000  # when it was stored, if not told


@case
async def get_contact(store: Store, seed: Seed) -> None:
    await store.put_contact(Contact("m1", "sales", "wmEXT1", "douyin"))
    assert await store.get_contact("m2", "sales", "wmEXT1") is None
    assert await store.get_contact(seed.m3, "sales", "wmEXT1") is None
    assert (await store.get_contact("m1", "sales", "wmEXT1")) is not None


@case
async def add_alert(store: Store, seed: Seed) -> None:
    assert await store.add_alert("m1", "balance_low", {}, key="k1", created_at=1.0)
    # The same key at another merchant is another alert; at the same one, a retry.
    assert await store.add_alert("m2", "balance_low", {}, key="k1", created_at=1.0)
    assert not await store.add_alert("m1", "balance_low", {}, key="k1", created_at=2.0)
    assert [a.merchant_id for a in await store.list_alerts("m1", since=0, limit=10)] == ["m1"]


@case
async def list_alerts(store: Store, seed: Seed) -> None:
    await store.add_alert("m1", "delete_link", {"LinkId": "cawA"}, key="a", created_at=2.0)
    await store.add_alert("m2", "link_unavailable", {"LinkId": "cawB"}, key="b", created_at=3.0)
    await store.add_alert("m2", "balance_low", {}, key="c", created_at=4.0)
    assert [(a.kind, a.detail) for a in await store.list_alerts("m1", since=0, limit=10)] == [
        ("delete_link", {"LinkId": "cawA"})]
    theirs = await store.list_alerts("m2", since=0, limit=10)
    assert [(a.merchant_id, a.kind, a.created_at) for a in theirs] == [
        ("m2", "balance_low", 4.0), ("m2", "link_unavailable", 3.0)]
    assert all(isinstance(a.id, int) for a in theirs) and theirs[0].id > theirs[1].id
    assert [a.kind for a in await store.list_alerts("m2", since=0, limit=1)] == ["balance_low"]
    assert await store.list_alerts(seed.m3, since=0, limit=10) == []


#: Contract methods that take no merchant, and why that is safe.
UNSCOPED = {
    "list_merchants": "every merchant, for an operator's `linkloop merchant list`",
    "set_password": "by email, as get_user (an operator's command)",
    "close": "lifecycle",
    "ping": "lifecycle",
    "schema_version": "the database's own version",
    "link": "the shopper's hot path: the share code names its merchant (codes are global)",
    "links": "the link cache's re-read of codes it already holds",
    "recent_links": "warms the link cache, which serves every merchant's codes",
    "watch_links": "hears changed codes, whichever merchant's",
    "pending_callbacks": "the callback worker's queue; each item carries its merchant",
    "finish_callback": "marks one item of that queue done, by its id",
    "get_user": "a login names only an email (a global key); reads after it are scoped",
    "record_login_failure": "by email, as get_user",
    "record_login_success": "by email, as get_user",
    "end_sessions": "by email, as get_user",
    "minted_values": "the link cache's read of minted links for codes it holds (as links)",
    "minted_image": "a share code's mini-program code, served on the shopper's path",
    "claim_due_mints": "the minting worker's queue; each row carries its merchant",
    "take_login_attempt": "per client address (hashed), before any login is known",
    "give_back_login_attempt": "per client address, as take_login_attempt",
    "unlock_user": "by email, as get_user (an operator's command)",
    "prune_raw": "every merchant's raw rows past the retention, by day (daily, and `linkloop "
                 "prune`)",
    "reseal_secrets": "every stored secret under the current key (`linkloop secrets rotate`)",
}


def _contract() -> dict[str, Callable[..., Any]]:
    """Every public method of the contract, of any kind: a coroutine, a plain method, an
    async generator, a static or class method (a new one must be placed, whatever it is)."""
    return {name: fn for name, fn in inspect.getmembers(
                Store, lambda m: inspect.isfunction(m) or inspect.ismethod(m))
            if not name.startswith("_")}


def _carries_a_merchant(hint: Any) -> bool:
    """A type that is, or holds, a record with a merchant_id field (Click, Entry, ...)."""
    if any(_carries_a_merchant(arg) for arg in typing.get_args(hint)):
        return True
    fields = getattr(hint, "__dataclass_fields__", None) or getattr(hint, "_fields", ())
    return "merchant_id" in fields


def _takes_a_merchant(fn: Callable[..., Any]) -> bool:
    hints = typing.get_type_hints(fn)
    return any(name == "merchant_id" or name.startswith("merchant")
               or _carries_a_merchant(hints.get(name))
               for name in inspect.signature(fn).parameters if name != "self")


def test_every_contract_method_has_an_isolation_case() -> None:
    contract = _contract()
    scoped = {name for name, fn in contract.items() if _takes_a_merchant(fn)}
    assert scoped, "the contract inspection found no method that takes a merchant"
    assert sorted(scoped - set(CASES)) == [], "add an isolation case for these methods"
    assert sorted(set(contract) - set(CASES) - set(UNSCOPED)) == [], (
        "a new contract method: add an isolation case, or list it in UNSCOPED with why")
    # Nothing that takes a merchant may hide among the unscoped, and no case is stale.
    assert sorted(scoped & set(UNSCOPED)) == []
    assert sorted((set(CASES) | set(UNSCOPED)) - set(contract)) == []


# --- running the cases on both engines -------------------------------------------------------
@contextlib.asynccontextmanager
async def _engine(name: str, tmp_path: Path) -> AsyncIterator[Store]:
    if name == "sqlite":
        store: Store = await SQLiteStore.open(tmp_path / "tenants.db")
        try:
            yield store
        finally:
            await store.close()
        return
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as schema:
        store = await PostgresStore.open(url, schema=schema)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def seeded(request: pytest.FixtureRequest, tmp_path: Path,
                 ) -> AsyncIterator[tuple[Store, Seed]]:
    async with _engine(request.param, tmp_path) as store:
        yield store, await seed(store)


@pytest.mark.parametrize("method", sorted(CASES))
async def test_isolation(seeded: tuple[Store, Seed], method: str) -> None:
    store, data = seeded
    await CASES[method](store, data)
    # Whatever the case did, each tenant's figures are still its own.
    for tenant in data.tenants:
        got = as_figures(await store.stats(tenant.id, from_day=WIDE[0], to_day=WIDE[1],
                                           by="channel"), "channel")
        assert got == expected_stats(tenant, from_day=WIDE[0], to_day=WIDE[1], by="channel")


async def test_postgres_a_forget_takes_only_its_merchants_visitors_set_aside_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # PostgreSQL's forget folds the visitors set aside, then deletes the visitor's rows set
    # aside by a click another gateway made after that fold (SQLite's forget is one write
    # transaction: nothing gets in). Those rows are the forgotten merchant's only: m2's
    # shopper of the same id, clicking meanwhile, still counts at m2. The forget_visitor
    # case above can't see this: with one store, nothing is set aside after the fold.
    from .test_pending import _meanwhile, _two_postgres_gateways

    def click(n: int, merchant: str, day: str) -> Click:
        return Click(f"{merchant}-meanwhile-{n}", merchant, 1, 1.0, day, "jd", "ua", "v", "h")

    async with _two_postgres_gateways() as (store, other, _url, _schema):
        await other.record([click(1, "m1", "2026-11-01"), click(1, "m2", "2026-11-01")], [])
        # Right after the forget's fold took the visitors set aside.
        _meanwhile(monkeypatch, store, "DELETE FROM pending_visitors",
                   lambda: other.record([click(2, "m1", "2026-11-02"),
                                         click(2, "m2", "2026-11-02")], []))
        forgotten = await store.forget_visitor("v", "m1")
        assert list(forgotten) == ["m1"] and forgotten["m1"]["clicks"] == 2
        await store.export_rollups("m1", before_day="2026-01-01")  # folds
        for merchant, visitors in (("m1", 0), ("m2", 1)):
            for day in ("2026-11-01", "2026-11-02"):
                (row,) = await store.stats(merchant, from_day=day, to_day=day, by="total")
                assert (row.clicks, row.unique_visitors) == (1, visitors), (merchant, day)
