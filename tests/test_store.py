"""The storage contract, run against every engine on real files and servers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from gateway.secretbox import SecretBox
from gateway.settings import load_settings
from gateway.store import (
    COUNTERS,
    METRICS,
    Click,
    CodeTaken,
    Credentials,
    Entry,
    EntryWay,
    Event,
    Merchant,
    MerchantExists,
    Store,
    StoreError,
    StoreUnavailable,
    User,
    UserExists,
    open_store,
)
from gateway.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from gateway.store.postgres import PostgresStore, split_schema
from gateway.store.sql import month_split
from gateway.store.sqlite import SQLiteStore

from . import pg
from .wait import DEADLINE, until

T = TypeVar("T")


@dataclass
class Database:
    """One engine's database for a test: open the store on it, look behind it."""

    engine: str
    #: Open the store (``fold_visitors``: fold what is set aside once that many are).
    open: Callable[..., Awaitable[Store]]
    #: Open the store with that box sealing its secrets (``open`` uses a throwaway one).
    open_sealed: Callable[[SecretBox], Awaitable[Store]]
    #: Rows of a query run on a plain connection (numbers as int, whatever the engine).
    fetch: Callable[[str], Awaitable[list[tuple[Any, ...]]]]

    async def versions(self) -> list[int]:
        """The applied migrations."""
        return [r[0] for r in await self.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]


def _plain(row: Sequence[Any]) -> tuple[Any, ...]:
    """PostgreSQL's SUM of bigints is numeric: as int, to compare with SQLite's."""
    return tuple(int(v) if isinstance(v, Decimal) else v for v in row)


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A file for SQLite; a fresh schema, dropped afterwards, for PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"

        async def sqlite_fetch(query: str) -> list[tuple[Any, ...]]:
            # Committed (``with conn``), as PostgreSQL's are: a test may seed rows this way.
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                return [_plain(r) for r in conn.execute(query)]

        yield Database("sqlite", lambda **options: SQLiteStore.open(path, **options),
                       lambda box: SQLiteStore.open(path, secrets=box), sqlite_fetch)
        return
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as schema:

        async def postgres_fetch(query: str) -> list[tuple[Any, ...]]:
            conn = await pg.connect(url, schema)
            try:
                return [_plain(r) for r in await conn.fetch(query)]
            finally:
                await conn.close()

        yield Database("postgres",
                       lambda **options: PostgresStore.open(url, schema=schema, **options),
                       lambda box: PostgresStore.open(url, schema=schema, secrets=box),
                       postgres_fetch)


@pytest.fixture
async def store(database: Database) -> AsyncIterator[Store]:
    engine = await database.open()
    yield engine
    await engine.close()


@pytest.fixture
def pg_url() -> str:
    return pg.postgres_url()


@pytest.fixture
async def pg_schema(pg_url: str) -> AsyncIterator[str]:
    async with pg.fresh_schema(pg_url) as schema:
        yield schema


def click(n: int, *, merchant: str = "m1", product: int = 1, day: str = "2026-11-01",
          platform: str = "taobao", visitor: str = "v1", bot: bool = False) -> Click:
    return Click(id=f"click{n:08d}", merchant_id=merchant, product_id=product, ts=1.0, day=day,
                 platform=platform, source="ua", visitor=visitor, ip_hash="h", bot=bot)


def event(n: int, kind: str = "storefront_open", **kw: object) -> Event:
    fields: dict[str, object] = {"merchant_id": "m1", "product_id": 1, "platform": "taobao",
                                 "ts": 1.0, "day": "2026-11-01"}
    fields.update(kw)
    return Event(id=f"event{n:08d}", kind=kind, **fields)  # type: ignore[arg-type]


async def _merchants(store: Store) -> None:
    await store.create_merchant(Merchant("m1", "One", ("one.example.com",)))
    await store.create_merchant(Merchant("m2", "Two"))


async def _product(store: Store, merchant: str = "m1", code: str = "code0001") -> int:
    product = await store.create_product(
        merchant, code=code, title="Tea", targets={"taobao": {"item_id": "123456"}},
        image_url=None, price="1.00")
    return product.id


async def _two_products(store: Store) -> tuple[int, int]:
    """Both merchants, and a product of each: (m1's, m2's)."""
    await _merchants(store)
    return await _product(store), await _product(store, "m2", "code0002")


async def test_merchants(store: Store) -> None:
    await _merchants(store)
    m1 = await store.get_merchant("m1")
    assert m1 is not None and m1.domains == ("one.example.com",) and m1.created_at > 0
    with pytest.raises(MerchantExists):
        await store.create_merchant(Merchant("m1", "Again"))
    assert await store.get_merchant("nobody") is None


async def test_products_are_scoped_by_merchant(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    assert (await store.get_product("m1", pid)) is not None
    assert await store.get_product("m2", pid) is None
    assert await store.update_product("m2", pid, {"title": "stolen"}) is None
    assert (await store.get_product("m1", pid)).title == "Tea"  # type: ignore[union-attr]
    assert await store.list_products("m2", limit=10) == []
    with pytest.raises(CodeTaken):
        await _product(store, "m2", code="code0001")


async def test_a_product_reads_back_as_it_was_made(store: Store) -> None:
    """Every field of a product, as made and as read (each merchant's own), and its
    creation time kept through a change."""
    await _merchants(store)
    made = [await store.create_product(
        merchant, code=f"code000{n}", title=f"Tea {n}", targets={"jd": {"sku": f"{n}234"}},
        image_url=f"https://img.example/{n}.png", price=f"{n}.50", valid_from=100.0 + n,
        valid_until=200.0 + n) for n, merchant in ((1, "m1"), (2, "m2"))]
    for product in made:
        assert await store.get_product(product.merchant_id, product.id) == product
        assert await store.list_products(product.merchant_id, limit=10) == [product]
    changed = await store.update_product("m2", made[1].id, {"title": "Green tea"})
    assert changed is not None and changed.created_at == made[1].created_at
    assert changed == replace(made[1], title="Green tea", updated_at=changed.updated_at)
    assert await store.get_product("m1", made[0].id) == made[0]


async def test_product_lifecycle_and_link_lookup(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    linked = await store.link("code0001")
    assert linked is not None and linked.id == pid and linked.targets == {
        "taobao": {"item_id": "123456"}}
    changed = await store.update_product("m1", pid, {"targets": {"jd": {"sku": "1234"}},
                                                     "status": "retired"})
    assert changed is not None and changed.retired and changed.targets == {"jd": {"sku": "1234"}}
    assert changed.updated_at >= changed.created_at
    assert (await store.link("code0001")).retired  # type: ignore[union-attr]
    assert await store.link("nope") is None


async def test_many_links_in_one_read(store: Store) -> None:
    await _merchants(store)
    ids = {f"code{i:04d}": await _product(store, code=f"code{i:04d}") for i in range(120)}
    await store.update_product("m1", ids["code0007"], {"status": "retired"})
    # More codes than one statement takes, with unknown ones among them.
    found = await store.links([*ids, "nope", "code9999"])
    assert {code: p.id for code, p in found.items()} == ids
    assert found["code0007"].retired and not found["code0008"].retired
    assert await store.links([]) == {}


async def test_a_product_reads_back_with_every_field_from_every_read(store: Store) -> None:
    # Every read builds a product from the row: each column in its own field (the image
    # and price, the sales window, created and changed times apart), for both merchants.
    await _merchants(store)
    expected = []
    for merchant, code in (("m1", "code0001"), ("m2", "code0002")):
        made = await store.create_product(
            merchant, code=code, title="Tea", targets={"taobao": {"item_id": "123456"}},
            image_url=f"https://img.example.com/{code}.png", price="12.50",
            valid_from=1_800_000_000.0, valid_until=1_900_000_000.0)
        await until(lambda made=made: time.time() > made.created_at, what="a later time")
        changed = await store.update_product(merchant, made.id, {"title": f"Tea of {merchant}"})
        assert changed is not None and changed.updated_at > made.created_at
        expected.append(replace(made, title=f"Tea of {merchant}", updated_at=changed.updated_at))
        assert changed == expected[-1]
    for product in expected:
        assert await store.get_product(product.merchant_id, product.id) == product
        assert await store.link(product.code) == product
        assert await store.list_products(product.merchant_id, limit=10) == [product]
    assert await store.links([p.code for p in expected]) == {p.code: p for p in expected}
    assert await store.recent_links(10) == expected[::-1]


async def test_reseal_puts_both_merchants_secrets_under_the_new_key(database: Database) -> None:
    """After a key rotation (the new key first, the old one still opening), a reseal seals
    every stored secret, both merchants' entries and app secret, under the new key and
    says how many; then the old key can go: a box with only the new one reads them all. A
    second reseal has nothing left to do."""
    import secrets

    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    wanted = {m: {"corp_id": f"ww{m}", "secret": f"s-{m}"} for m in ("m1", "m2")}
    store = await database.open_sealed(SecretBox([old]))
    try:
        await _merchants(store)
        for merchant, sealed in wanted.items():
            await store.put_entry(Entry(merchant, "contact_way", {"users": ["sales"]}, sealed))
        await store.put_credentials(Credentials("m2", "wechat_miniprogram", "wxapp", "app-2"))
    finally:
        await store.close()
    rotated = await database.open_sealed(SecretBox([new, old]))
    try:
        assert await rotated.reseal_secrets(only_plain=True) == {"entries": 0,
                                                                 "app_credentials": 0}
        assert await rotated.reseal_secrets() == {"entries": 2, "app_credentials": 1}
        assert await rotated.reseal_secrets() == {"entries": 0, "app_credentials": 0}
    finally:
        await rotated.close()
    only_new = await database.open_sealed(SecretBox([new]))
    try:
        for merchant, sealed in wanted.items():
            entry = await only_new.get_entry(merchant)
            assert entry is not None and entry.secrets == sealed
        app = await only_new.get_credentials("m2", "wechat_miniprogram")
        assert app is not None and app.secret == "app-2"
    finally:
        await only_new.close()


async def test_plain_secrets_of_an_older_version_are_sealed_when_it_opens(
        database: Database) -> None:
    """Rows a version before sealing stored (both merchants') are sealed when storage
    opens with a key of its own, and read back as they were."""
    store = await database.open()
    try:
        await _merchants(store)
    finally:
        await store.close()
    for merchant in ("m1", "m2"):
        await database.fetch(
            "INSERT INTO entries (merchant_id, kind, config, secrets, updated_at) VALUES "
            f"('{merchant}', 'contact_way', '{{\"users\": [\"sales\"]}}', "
            f"'{{\"secret\": \"s-{merchant}\"}}', 1)")
    store = await database.open_sealed(SecretBox([secrets.token_bytes(32)]))
    try:
        stored = [str(r[0]) for r in await database.fetch("SELECT secrets FROM entries")]
        # Sealed whole: the JSON string of one sealed value, no key or plain value left
        # (not a search for "s-m": base64url ciphertext holds it by chance, 1 run in ~2,000).
        assert len(stored) == 2 and all(
            row.startswith('"llsec1:') and '"secret"' not in row and '"s-m' not in row
            for row in stored), stored
        for merchant in ("m1", "m2"):
            entry = await store.get_entry(merchant)
            assert entry is not None and entry.secrets == {"secret": f"s-{merchant}"}
    finally:
        await store.close()


async def test_recent_links_are_the_last_changed_of_every_merchant(store: Store) -> None:
    """The link cache warms with the links changed last, whoever's, newest first."""
    await _merchants(store)
    first = await _product(store, code="code0001")
    theirs = await _product(store, "m2", code="code0002")
    last = await _product(store, code="code0003")
    await store.update_product("m1", first, {"title": "Tea, again"})
    assert [(p.code, p.id) for p in await store.recent_links(2)] == [
        ("code0001", first), ("code0003", last)]
    every = await store.recent_links(10)
    assert [(p.merchant_id, p.code, p.id) for p in every] == [
        ("m1", "code0001", first), ("m1", "code0003", last), ("m2", "code0002", theirs)]
    assert every[0].title == "Tea, again"


async def test_keyset_pagination(store: Store) -> None:
    await _merchants(store)
    ids = [await _product(store, code=f"code{i:04d}") for i in range(5)]
    first = await store.list_products("m1", limit=2)
    rest = await store.list_products("m1", limit=10, after_id=first[-1].id)
    assert [p.id for p in [*first, *rest]] == ids


async def test_record_rolls_up_in_one_go_and_replay_never_double_counts(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    clicks = [click(1, product=pid, visitor="a"), click(2, product=pid, visitor="a"),
              click(3, product=pid, visitor="b"), click(4, product=pid, bot=True),
              click(5, product=pid, platform="web", visitor="a")]
    events = [event(1, product_id=pid), event(2, "entry", product_id=pid),
              event(3, "add", product_id=pid, click_id="click00000001")]
    await store.record(clicks, events)
    await store.record(clicks, events)  # a replay of the same batch
    await store.record([click(6, product=pid, visitor="a")], [])  # same visitor, same day
    rows = {r.key["platform"]: r.as_json() for r in await store.stats(
        "m1", from_day="2026-11-01", to_day="2026-11-01", by="platform")}
    assert rows["taobao"] == {"platform": "taobao", "clicks": 4, "unique_visitors": 2,
                              "unique_visitors_error": 0, "bot_clicks": 1, "redirects": 0,
                              "landings": 0, "guides": 0, "storefront_opens": 1, "entries": 1,
                              "adds": 1, "chats": 0, "lost_contacts": 0}
    assert rows["web"]["clicks"] == 1 and rows["web"]["unique_visitors"] == 1


async def test_a_row_repeated_within_one_batch_counts_once(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    other = await _product(store, "m2", code="code0002")
    twice = [click(1, product=pid, visitor="a"), click(2, merchant="m2", product=other)]
    opened = event(1, product_id=pid, click_id="click00000001")
    await store.record([*twice, *twice], [opened, opened])
    for merchant, figures in (("m1", (1, 1, 1)), ("m2", (1, 1, 0))):
        (total,) = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="total")
        assert (total.clicks, total.unique_visitors, total.storefront_opens) == figures


async def test_a_batch_partly_stored_already_counts_those_rows_once(
        database: Database, store: Store) -> None:
    # A batch sent again with new rows (an unclear commit's batch retried with the clicks
    # that came since, a killed gateway's log drained again): rows stored already count
    # once, every new one is stored and counted. New rows come first, more than one
    # statement's worth (50 rows), so an insert that met a stored id only after putting some
    # in would have to take those back; an id repeated in the batch counts once too.
    pid, other = await _two_products(store)

    def batch(numbers: Sequence[int]) -> tuple[list[Click], list[Event]]:
        """Click n (m2's when n is a multiple of 3, else m1's), and a storefront open of it."""
        clicks, events = [], []
        for n in numbers:
            merchant, product = ("m2", other) if n % 3 == 0 else ("m1", pid)
            clicks.append(click(n, merchant=merchant, product=product, visitor=f"v{n % 40}"))
            events.append(event(n, merchant_id=merchant, product_id=product,
                                click_id=clicks[-1].id))
        return clicks, events

    stored = range(100, 160)
    await store.record(*batch(stored))
    again = [*range(60), *range(100, 160, 2), *range(60, 90), 5, 130]  # new, old, new, twice
    await store.record(*batch(again))
    every = sorted({*stored, *again})
    for merchant, mine in (("m1", [n for n in every if n % 3]),
                           ("m2", [n for n in every if n % 3 == 0])):
        (total,) = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="total")
        assert (total.clicks, total.unique_visitors, total.storefront_opens) == (
            len(mine), len({n % 40 for n in mine}), len(mine)), merchant
    assert await database.fetch("SELECT id FROM clicks ORDER BY id") == [
        (f"click{n:08d}",) for n in every]
    assert await database.fetch("SELECT id FROM events ORDER BY id") == [
        (f"event{n:08d}",) for n in every]


async def test_an_export_gives_back_each_click_as_recorded(store: Store) -> None:
    # A merchant moved to another engine (export, import) keeps every field of its clicks:
    # the outcome is what its storefront-open and landing counts are made from.
    await _merchants(store)
    pid = await _product(store)
    other = await _product(store, "m2", code="code0002")
    phone = click(1, product=pid)._replace(mobile=True, os="ios", channel="live",
                                           outcome="redirect")
    desktop = click(2, product=pid)._replace(os="windows", outcome="landing")
    theirs = click(3, merchant="m2", product=other)._replace(mobile=True, os="android",
                                                           outcome="guide")
    await store.record([phone, desktop, theirs], [])
    assert await store.export_clicks("m1", after="", limit=10) == [phone, desktop]
    assert await store.export_clicks("m2", after="", limit=10) == [theirs]


async def test_stats_groupings_ranges_and_tenants(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    other = await _product(store, "m2", code="code0002")
    await store.record([
        click(1, product=pid, day="2026-10-31"), click(2, product=pid, day="2026-11-01"),
        click(3, product=pid, day="2026-11-02", platform="jd"),
        click(4, merchant="m2", product=other, day="2026-11-01"),
    ], [])
    by_day = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-30", by="day")
    assert [(r.key["day"], r.clicks) for r in by_day] == [("2026-11-01", 1), ("2026-11-02", 1)]
    by_product = await store.stats("m1", from_day="2026-10-01", to_day="2026-11-30",
                                   by="product")
    assert [(r.key["product_id"], r.key["code"], r.clicks) for r in by_product] == [
        (pid, "code0001", 3)]
    only_jd = await store.stats("m1", from_day="2026-10-01", to_day="2026-11-30",
                                by="platform", platform="jd")
    assert [(r.key["platform"], r.clicks) for r in only_jd] == [("jd", 1)]
    # m1 asking about m2's product by id gets nothing
    assert await store.stats("m1", from_day="2026-10-01", to_day="2026-11-30", by="platform",
                             product_id=other) == []


async def test_migrations_apply_once_and_data_survives_reopen(database: Database) -> None:
    migrations = SQLITE_MIGRATIONS if database.engine == "sqlite" else POSTGRES_MIGRATIONS
    expected = [version for version, _ in migrations]
    first = await database.open()
    await first.create_merchant(Merchant("m1", "One"))
    await first.close()
    assert await database.versions() == expected
    second = await database.open()
    assert await second.get_merchant("m1") is not None
    assert await second.schema_version() == expected[-1]
    await second.ping()  # the health check's question, answered
    await second.close()
    assert await database.versions() == expected


async def test_click_origin_is_scoped_by_merchant(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    await store.record([click(1, product=pid, platform="douyin")], [])
    assert await store.click_origin("m1", "click00000001") == (pid, "douyin")
    assert await store.click_origin("m2", "click00000001") is None
    assert await store.click_origin("m1", "click00000099") is None


async def test_entry_and_its_ways(store: Store) -> None:
    await _merchants(store)
    assert await store.get_entry("m1") is None
    entry = await store.put_entry(Entry("m1", "contact_way", {"users": ["zhangsan"]},
                                        {"corp_id": "ww1", "secret": "s"}))
    got = await store.get_entry("m1")
    assert got is not None and got.kind == "contact_way" and got.config == {"users": ["zhangsan"]}
    assert got.secrets == {"corp_id": "ww1", "secret": "s"} and got.updated_at == entry.updated_at
    assert await store.get_entry("m2") is None

    way = await store.put_entry_way(EntryWay("m1", "taobao", "cfg1", "https://qr/1", "st1"))
    assert way.config_id == "cfg1" and way.created_at > 0
    kept = await store.put_entry_way(EntryWay("m1", "taobao", "cfg2", "https://qr/2", "st2"))
    assert kept == way  # the first way made for a platform is the one kept
    assert await store.get_entry_way("m1", "taobao") == way
    assert await store.get_entry_way("m2", "taobao") is None
    await store.put_entry(Entry("m1", "group", {"chat_ids": ["wr1"]}, {}))
    assert await store.get_entry_way("m1", "taobao") is None  # a new entry forgets old ways


async def test_callback_inbox_and_group_members(store: Store) -> None:
    await _merchants(store)
    assert await store.accept_callback("m1", "nonce1", "<xml>1</xml>")
    assert not await store.accept_callback("m1", "nonce1", "<xml>1</xml>")  # a replay
    assert await store.accept_callback("m2", "nonce1", "<xml>2</xml>")  # nonces are per merchant
    pending = await store.pending_callbacks(10)
    assert [(i.merchant_id, i.message) for i in pending] == [
        ("m1", "<xml>1</xml>"), ("m2", "<xml>2</xml>")]
    assert await store.pending_callbacks(1) == pending[:1]  # the oldest first
    await store.finish_callback(pending[0].id)
    assert [i.id for i in await store.pending_callbacks(10)] == [pending[1].id]
    assert await store.add_group_member("m1", "wr1", "wm_a")
    assert not await store.add_group_member("m1", "wr1", "wm_a")
    assert await store.add_group_member("m2", "wr1", "wm_a")


async def test_prune_takes_every_merchants_raw_rows_before_the_day_and_done_callbacks(
        database: Database, store: Store) -> None:
    """Raw clicks, events and (as versions before the sketches wrote them) visitor rows
    of days before the cutoff go, more than one page of them (2,000), for both merchants;
    the cutoff day's stay. Worked callbacks received before the cutoff time go, those not
    worked yet or received after it stay. The counts say what went. On PostgreSQL a month
    partition that ends by the cutoff is dropped whole (its rows not counted), the rows of
    older days in the default partition deleted."""
    p1, p2 = await _two_products(store)
    old, older, kept = "2026-01-31", "2025-12-31", "2026-02-01"
    if database.engine == "postgres":  # January has a partition, ending where the cutoff is
        await database.fetch("SELECT ensure_click_partition('2026-01-01'::date)")
    clicks = [click(n, product=p1, day=old, visitor=f"v{n}") for n in range(2001)]
    # An id that sorts before any letter (as the generated ones can): the first page starts
    # before every id, not at some made-up one.
    clicks.append(click(0, product=p1, day=older)._replace(id="0000first"))
    clicks += [click(3000 + n, merchant="m2", product=p2, day=older) for n in range(3)]
    clicks += [click(4000, product=p1, day=kept), click(4001, merchant="m2", product=p2, day=kept)]
    events = [event(n, product_id=p1, day=old, click_id=f"click{n:08d}") for n in range(2)]
    events += [event(10, merchant_id="m2", product_id=p2, day=old),
               event(11, merchant_id="m2", product_id=p2, day=kept)]
    await store.record(clicks, events)
    for merchant, product, count in (("m1", p1, 2001), ("m2", p2, 2)):
        for day in (old, kept):
            await database.fetch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                f"WHERE i < {count}) INSERT INTO daily_visitors (merchant_id, product_id, day, "
                f"platform, visitor) SELECT '{merchant}', {product}, '{day}', 'taobao', "
                "'v' || i FROM n")
    for merchant, nonce in (("m1", "worked"), ("m2", "waiting")):
        assert await store.accept_callback(merchant, nonce, "<xml/>")
    worked, waiting = await store.pending_callbacks(10)
    await store.finish_callback(worked.id)
    (received,), = await database.fetch("SELECT max(received_at) FROM wecom_inbox")
    cutoff = received + 0.001
    await until(lambda: time.time() > cutoff, what="the clock past the cutoff")
    assert await store.accept_callback("m2", "worked-later", "<xml/>")
    (later,) = [i for i in await store.pending_callbacks(10) if i.id != waiting.id]
    await store.finish_callback(later.id)

    counts = await store.prune_raw(before_day=kept, before_ts=cutoff)
    if database.engine == "postgres":
        assert counts.pop("partitions_dropped") == ["clicks_2026_01"]
        assert counts["clicks"] == 4  # December's, from the default partition
    else:
        assert counts["clicks"] == 2005
    assert set(counts) == {"clicks", "events", "visitors", "callbacks"}
    assert (counts["events"], counts["visitors"], counts["callbacks"]) == (3, 2003, 1)
    for table, left in (("clicks", [("m1", kept), ("m2", kept)]),
                        ("events", [("m2", kept)]),
                        ("daily_visitors", [("m1", kept)] * 2001 + [("m2", kept)] * 2)):
        assert sorted(await database.fetch(f"SELECT merchant_id, day FROM {table}")) == left
    assert sorted(await database.fetch("SELECT merchant_id, nonce FROM wecom_inbox")) == [
        ("m2", "waiting"), ("m2", "worked-later")]
    again = await store.prune_raw(before_day=kept, before_ts=cutoff)
    assert (again["clicks"], again["events"], again["visitors"], again["callbacks"]) == (
        0, 0, 0, 0)


# --- PostgreSQL only ------------------------------------------------------------------------
async def test_forget_rebuilds_an_estimated_cell_and_leaves_one_whose_raw_clicks_are_pruned(
        store: Store) -> None:
    """Each merchant: 257 visitors on 2026-11-01 (an estimate, its raw clicks all kept);
    300 on 2026-10-01, pruned, and 2 on 2026-10-02. The visitor forgotten at m1 leaves
    November's cells rebuilt from the 256 left (exact again), October's month cells left
    as they were (their raw clicks are partly gone) and 2026-10-02's exact cells cleaned;
    m2's figures stay as they were."""
    p1, p2 = await _two_products(store)
    gone = "vShared"
    for merchant, product in (("m1", p1), ("m2", p2)):
        seen = [("2026-11-01", gone), ("2026-10-02", gone), ("2026-10-02", f"{merchant}-x")]
        seen += [("2026-11-01", f"{merchant}-n{n}") for n in range(256)]
        seen += [("2026-10-01", f"{merchant}-o{n}") for n in range(300)]
        await store.record([Click(id=f"{merchant}-click{n:04d}", merchant_id=merchant,
                                  product_id=product, ts=1.0, day=day, platform="taobao",
                                  source="ua", visitor=visitor, ip_hash="h")
                            for n, (day, visitor) in enumerate(seen)], [])
    await store.prune_raw(before_day="2026-10-02", before_ts=0)

    async def figures(merchant: str) -> list[tuple[int, int, int]]:
        return [(r.clicks, r.unique_visitors, r.unique_visitors_error)
                for first, last in (("2026-11-01", "2026-11-01"), ("2026-11-01", "2026-11-30"),
                                    ("2026-10-02", "2026-10-02"), ("2026-10-01", "2026-10-31"))
                for r in await store.stats(merchant, from_day=first, to_day=last, by="total")]

    before = {merchant: await figures(merchant) for merchant in ("m1", "m2")}
    assert [error > 0 for _c, _u, error in before["m1"]] == [True, True, False, True]
    assert await store.forget_visitor(gone, "m1") == {"m1": {
        "clicks": 2, "events": 0, "visitors": 0,
        "sketches_cleaned": 4, "sketches_rebuilt": 8, "sketches_left": 4}}
    assert await figures("m1") == [(257, 256, 0), (257, 256, 0), (2, 1, 0), before["m1"][3]]
    assert await figures("m2") == before["m2"]


async def test_forget_finds_a_visitor_in_cells_whose_clicks_are_all_pruned(
        store: Store) -> None:
    """Each merchant: two visitors on 2026-09-15, their raw clicks pruned since. Only the
    sketches know the visitor was there: a forget finds them by their hash in the exact
    cells (all 8 kinds of that day's cell), and September counts one visitor at m1."""
    p1, p2 = await _two_products(store)
    for merchant, product in (("m1", p1), ("m2", p2)):
        await store.record([Click(id=f"{merchant}-old{n}", merchant_id=merchant,
                                  product_id=product, ts=1.0, day="2026-09-15",
                                  platform="taobao", source="ua", visitor=visitor, ip_hash="h")
                            for n, visitor in enumerate(("vOld", f"{merchant}-other"))], [])
    await store.prune_raw(before_day="2026-10-01", before_ts=0)

    async def september(merchant: str) -> tuple[int, int]:
        (row,) = await store.stats(merchant, from_day="2026-09-01", to_day="2026-09-30",
                                   by="total")
        return row.clicks, row.unique_visitors

    assert await september("m1") == await september("m2") == (2, 2)
    assert await store.forget_visitor("vOld", "m1") == {"m1": {
        "clicks": 0, "events": 0, "visitors": 0,
        "sketches_cleaned": 8, "sketches_rebuilt": 0, "sketches_left": 0}}
    assert await september("m1") == (2, 1)  # the rollups keep their counts
    assert await september("m2") == (2, 2)


async def test_postgres_prune_gives_way_to_another_gateway_and_to_a_busy_partition(
        pg_url: str, pg_schema: str) -> None:
    """One gateway prunes at a time: while another holds the prune lock a prune deletes
    nothing and says it skipped; each prune gives the lock back, so the next gateway's
    runs. A month partition someone else is using is not waited for (past 2 s): a warning
    names it, its old rows are deleted instead, and a later prune drops it."""
    import structlog

    first = await PostgresStore.open(pg_url, schema=pg_schema)
    second = await PostgresStore.open(pg_url, schema=pg_schema)
    other = await pg.connect(pg_url, pg_schema)
    try:
        p1, p2 = await _two_products(first)
        await other.execute("SELECT ensure_click_partition('2026-01-01'::date)")
        await first.record([click(1, product=p1, day="2026-01-31"),
                            click(2, merchant="m2", product=p2, day="2026-01-31")], [])
        key = f"linkloop:prune:{pg_schema}"
        await other.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        skipped = await first.prune_raw(before_day="2026-02-01", before_ts=0.0)
        assert skipped["skipped"] and skipped["partitions_dropped"] == []
        assert await other.fetchval("SELECT count(*) FROM clicks") == 2
        await other.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
        async with other.transaction():
            await other.execute("LOCK TABLE clicks_2026_01 IN ACCESS SHARE MODE")
            with structlog.testing.capture_logs() as logs:
                busy = await first.prune_raw(before_day="2026-02-01", before_ts=0.0)
        assert "skipped" not in busy
        assert (busy["partitions_dropped"], busy["clicks"]) == ([], 2)
        assert [(e["event"], e.get("partition")) for e in logs
                if e["log_level"] == "warning"] == [("prune.partition_busy", "clicks_2026_01")]
        again = await second.prune_raw(before_day="2026-02-01", before_ts=0.0)
        assert "skipped" not in again and again["partitions_dropped"] == ["clicks_2026_01"]
    finally:
        await other.close()
        await first.close()
        await second.close()


def _months(first: date, count: int) -> list[date]:
    """``count`` first days of months, from ``first``'s month on."""
    index = first.year * 12 + first.month - 1
    return [date((index + k) // 12, (index + k) % 12 + 1, 1) for k in range(count)]


def _partition(month: date) -> str:
    return f"clicks_{month.year:04d}_{month.month:02d}"


async def test_postgres_click_partitions_exist_ahead(pg_url: str, pg_schema: str) -> None:
    store = await PostgresStore.open(pg_url, schema=pg_schema, months_ahead=3)
    try:
        this_month = datetime.now(UTC).date().replace(day=1)
        last_month = (this_month - date.resolution).replace(day=1)
        months = _months(last_month, 5)  # last month, this one, 3 ahead
        parts = dict(await store.click_partitions())
        assert set(parts) == {*map(_partition, months), "clicks_default"}
        assert parts["clicks_default"] == "DEFAULT"
        this = months[1]
        assert parts[_partition(this)] == (
            f"FOR VALUES FROM ('{this.isoformat()}') TO ('{months[2].isoformat()}')")
        # Asking again makes nothing new; asking further ahead makes just the new months.
        assert await store.ensure_partitions() == []
        assert await store.ensure_partitions(months_ahead=5) == [
            _partition(m) for m in _months(months[-1], 3)[1:]]
    finally:
        await store.close()


async def test_postgres_clicks_land_in_their_month_and_late_partitions_take_them(
        pg_url: str, pg_schema: str) -> None:
    store = await PostgresStore.open(pg_url, schema=pg_schema)
    try:
        await _merchants(store)
        pid = await _product(store)
        far = [click(1, product=pid, day="2031-05-02"), click(2, product=pid, day="2031-05-31")]
        await store.record(far, [])
        conn = await pg.connect(pg_url, pg_schema)
        try:
            where = "SELECT tableoid::regclass::text, id FROM clicks ORDER BY id"
            assert [tuple(r) for r in await conn.fetch(where)] == [
                ("clicks_default", "click00000001"), ("clicks_default", "click00000002")]
            assert await store.ensure_partitions(0, today=date(2031, 5, 1)) == [
                "clicks_2031_04", "clicks_2031_05"]
            assert [tuple(r) for r in await conn.fetch(where)] == [
                ("clicks_2031_05", "click00000001"), ("clicks_2031_05", "click00000002")]
        finally:
            await conn.close()
        await store.record(far, [])  # a replay after the move still counts once
        rows = await store.stats("m1", from_day="2031-05-01", to_day="2031-05-31", by="platform")
        assert [(r.key["platform"], r.clicks) for r in rows] == [("taobao", 2)]
        assert await store.click_origin("m1", "click00000002") == (pid, "taobao")
    finally:
        await store.close()


async def test_postgres_partition_months_are_counted_from_the_utc_date(
        pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server whose clock is set to Shanghai time, at 04:00 there on 1 June: in UTC it is
    # still 31 May, so the months kept are May and the one before it, not June's.
    from datetime import tzinfo
    from typing import Self
    from zoneinfo import ZoneInfo

    import gateway.store.postgres as postgres_module

    instant = datetime(2031, 5, 31, 20, 0, tzinfo=UTC)

    class ServerClock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            moment = instant.astimezone(tz or ZoneInfo("Asia/Shanghai"))
            return cls.combine(moment.date(), moment.time(), moment.tzinfo if tz else None)

    store = await PostgresStore.open(pg_url, schema=pg_schema)
    try:
        monkeypatch.setattr(postgres_module, "datetime", ServerClock)
        assert await store.ensure_partitions(0) == ["clicks_2031_04", "clicks_2031_05"]
    finally:
        await store.close()


async def test_postgres_close_does_not_wait_for_a_call_stuck_on_a_lock(
        pg_url: str, pg_schema: str) -> None:
    # A gateway stopping while a forget (no call deadline) waits on another session's lock:
    # the close waits for its connection up to the timeout, then cuts it, rather than hang
    # the shutdown until the lock goes.
    store = await PostgresStore.open(pg_url, schema=pg_schema, timeout_seconds=0.5)
    admin = await pg.connect(pg_url, pg_schema)
    try:
        pid = (await _two_products(store))[0]
        await store.record([click(1, product=pid, visitor="a")], [])
        await admin.execute("BEGIN; LOCK TABLE clicks IN ACCESS EXCLUSIVE MODE")
        forget = asyncio.create_task(store.forget_visitor("a", "m1"))

        async def forget_waits() -> bool:
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND position('FROM clicks WHERE visitor' IN query) > 0"))

        await until(forget_waits, what="the forget waiting on clicks")
        await asyncio.wait_for(store.close(), DEADLINE)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(forget, DEADLINE)
    finally:
        await admin.close()
        await store.close()


async def test_postgres_the_write_path_keeps_partitions_ahead_and_survives_failing_to(
        pg_url: str, pg_schema: str) -> None:
    import structlog

    store = await PostgresStore.open(pg_url, schema=pg_schema, months_ahead=1)
    try:
        pid, other = await _two_products(store)
        before = {name for name, _ in await store.click_partitions()}
        # Hours later (the check is due again), with a gateway now set to keep 2 months ahead.
        store.months_ahead = 2
        store._next_partition_check = 0.0
        await store.record([click(1, product=pid)], [])
        made = {name for name, _ in await store.click_partitions()} - before
        this_month = datetime.now(UTC).date().replace(day=1)
        assert made == {_partition(_months(this_month, 3)[-1])}
        # That check is not due again for hours: the next batch (the same click, sent again)
        # makes no partition, though the gateway would now keep one more month.
        store.months_ahead = 3
        await store.record([click(1, product=pid)], [])
        assert {name for name, _ in await store.click_partitions()} == before | made
        # The partition maker broken (an operator's mistake): clicks are still written, the
        # failure is logged once, and not tried again on every batch.
        admin = await pg.connect(pg_url, pg_schema)
        try:
            await admin.execute("DROP FUNCTION ensure_click_partition(date)")
        finally:
            await admin.close()
        store.months_ahead = 3
        store._next_partition_check = 0.0
        with structlog.testing.capture_logs() as logs:
            await store.record([click(2, product=pid)], [])
            await store.record([click(3, merchant="m2", product=other)], [])
        failed = [entry for entry in logs if entry["log_level"] == "warning"]
        assert [entry["event"] for entry in failed] == ["store.partitions_failed"]
        assert "ensure_click_partition" in failed[0]["error"]
        for merchant, clicks in (("m1", 2), ("m2", 1)):
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [r.clicks for r in rows] == [clicks]
    finally:
        await store.close()


async def test_postgres_concurrent_opens_on_a_fresh_schema(pg_url: str, pg_schema: str) -> None:
    # Without the advisory lock the second opener trips over the first one's tables.
    stores = await asyncio.gather(PostgresStore.open(pg_url, schema=pg_schema),
                                  PostgresStore.open(pg_url, schema=pg_schema))
    try:
        await stores[0].create_merchant(Merchant("m1", "One"))
        assert await stores[1].get_merchant("m1") is not None
        conn = await pg.connect(pg_url, pg_schema)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        finally:
            await conn.close()
        assert sorted(versions) == [v for v, _ in POSTGRES_MIGRATIONS]
    finally:
        for store in stores:
            await store.close()


async def test_postgres_without_a_schema_works_in_the_search_path_and_shares_its_locks(
        pg_url: str, pg_schema: str) -> None:
    """A storage URL without ``schema=`` (the search path, here the URL's, picks it): the
    store works there, and its migrations and prunes take the same locks as a gateway
    naming that schema, so the two never migrate or prune at once."""
    admin = await pg.connect(pg_url, pg_schema)
    try:
        migrating, pruning = f"linkloop:migrate:{pg_schema}", f"linkloop:prune:{pg_schema}"
        await admin.execute("SELECT pg_advisory_lock(hashtext($1))", migrating)
        opening = asyncio.create_task(PostgresStore.open(
            f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={pg_schema}"))

        async def opening_waits() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND datname = current_database()"))

        await until(opening_waits, what="the open waiting for the migration lock")
        assert not opening.done()
        await admin.execute("SELECT pg_advisory_unlock(hashtext($1))", migrating)
        store = await asyncio.wait_for(opening, 20)
        try:
            assert store.schema is None
            await _two_products(store)
            assert await admin.fetchval("SELECT count(*) FROM merchants") == 2  # there
            await admin.execute("SELECT pg_advisory_lock(hashtext($1))", pruning)
            assert (await store.prune_raw(before_day="2026-11-01", before_ts=0.0)).get(
                "skipped") == "another gateway is pruning"
            await admin.execute("SELECT pg_advisory_unlock(hashtext($1))", pruning)
            assert "skipped" not in await store.prune_raw(before_day="2026-11-01",
                                                          before_ts=0.0)
        finally:
            await store.close()
    finally:
        await admin.close()


@pytest.mark.parametrize("locked", ["visitor_sketches", "rollups"])
async def test_postgres_folds_that_find_a_table_locked_leave_what_is_set_aside_to_the_next_batch(
        pg_url: str, pg_schema: str, locked: str) -> None:
    # Two gateways' batches share one visitor cell (the merchant's day), each folding right
    # after its batch. With the sketches or a counter table locked (an import or a forget
    # writing them, or the other's fold), a fold gives up at once rather than hold up its
    # writer: the visitors and counts stay set aside and counted, and a later batch folds
    # them, none lost and none twice.
    stores = [await PostgresStore.open(pg_url, schema=pg_schema, fold_visitors=1,
                                       timeout_seconds=3 * DEADLINE) for _ in range(2)]
    try:
        await _merchants(stores[0])
        tea = await _product(stores[0])
        cup = await _product(stores[0], code="code0002")
        other = await _product(stores[0], "m2", "code0003")
        admin = await pg.connect(pg_url, pg_schema)
        try:
            # Reads of the sketches go ahead; writes wait for the lock.
            await admin.execute(f"BEGIN; LOCK TABLE {locked} IN EXCLUSIVE MODE")
            # Both batches are stored and return while the lock is held: a fold that
            # waited for it would not return before the lock went.
            with structlog.testing.capture_logs() as logs:
                await asyncio.wait_for(asyncio.gather(
                    stores[0].record([click(1, product=tea, visitor="a"),
                                      click(2, merchant="m2", product=other, visitor="x")],
                                     []),
                    stores[1].record([click(3, product=cup, platform="jd", visitor="b")],
                                     [])),
                    DEADLINE)
            # Each says it left its own rows for later: two, and one.
            assert sorted(e["pending"] for e in logs
                          if e["event"] == "store.fold_deferred") == [1, 2]
            assert await _pending_rows(pg_url, pg_schema) == 3
            # A row per product and platform: tea's and the other merchant's, cup's on JD.
            assert await _pending_rows(pg_url, pg_schema, "pending_counts") == 3
            for merchant, clicks, visitors in (("m1", 2, 2), ("m2", 1, 1)):
                (total,) = await stores[1].stats(merchant, from_day="2026-11-01",
                                                 to_day="2026-11-01", by="total")
                assert (total.clicks, total.unique_visitors) == (clicks, visitors)
            await admin.execute("ROLLBACK")
        finally:
            await admin.close()
        # The next batch (a visitor coming back) folds every gateway's.
        await stores[0].record([click(4, merchant="m2", product=other, visitor="x")], [])
        assert await _pending_rows(pg_url, pg_schema) == 0
        assert await _pending_rows(pg_url, pg_schema, "pending_counts") == 0
        for merchant, clicks, visitors in (("m1", 2, 2), ("m2", 2, 1)):
            (total,) = await stores[1].stats(merchant, from_day="2026-11-01",
                                             to_day="2026-11-01", by="total")
            assert (total.clicks, total.unique_visitors) == (clicks, visitors)
    finally:
        for store in stores:
            await store.close()


async def _pending_rows(url: str, schema: str, table: str = "pending_visitors") -> int:
    conn = await pg.connect(url, schema)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_postgres_a_closed_login_window_written_during_the_tidy_up_starts_again(
        pg_url: str, pg_schema: str) -> None:
    # Closed windows are deleted first, then the attempt is counted: two statements. A row
    # another session writes in between (a gateway whose clock is behind) may already be
    # closed by this call's clock, and must count as closed, not as a used-up window.
    store = await PostgresStore.open(pg_url, schema=pg_schema)
    admin = await pg.connect(pg_url, pg_schema)
    try:
        def take(address: str, now: float) -> Awaitable[float]:
            return store.take_login_attempt(address, now=now, window_seconds=60,
                                            max_attempts=3)

        for address, now in (("hash-a", 900.0), ("hash-b", 990.0)):
            for _ in range(3):
                assert await take(address, now) == 0.0
        await admin.execute("BEGIN")
        await admin.execute("DELETE FROM login_throttle WHERE address = 'hash-a'")
        await admin.execute("INSERT INTO login_throttle VALUES ('hash-a', 900.0, 3)")
        blocker = await admin.fetchval("SELECT pg_backend_pid()")
        attempt = asyncio.create_task(take("hash-a", 1000.0))

        async def tidy_up_waits() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                blocker))

        await until(tidy_up_waits, what="the tidy-up waiting on the other session's row")
        await admin.execute("COMMIT")
        assert await asyncio.wait_for(attempt, 20) == 0.0  # 900's window closed at 960
        assert [await take("hash-a", 1000.0) for _ in range(3)] == [0.0, 0.0, 60.0]
        assert await take("hash-b", 1000.0) == 50.0  # another address's, as it was
    finally:
        await admin.close()
        await store.close()


async def test_postgres_storage_url_opens_postgres_in_its_schema(pg_url: str) -> None:
    async with pg.fresh_schema(pg_url, create=False) as schema:
        settings = load_settings(environ={"LINKLOOP_STORAGE_URL": pg.with_schema(pg_url, schema)})
        store = await open_store(settings)
        try:
            assert isinstance(store, PostgresStore) and store.schema == schema
            await store.create_merchant(Merchant("m1", "One"))
            # What a gateway holds on the server: one connection kept open, ten at most;
            # click partitions from last month to three months ahead (and the default).
            assert (store._pool.get_min_size(), store._pool.get_max_size()) == (1, 10)
            assert len(await store.click_partitions()) == 1 + 1 + 3 + 1
        finally:
            await store.close()
        conn = await pg.connect(pg_url)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'merchants'",
                schema) == 1
        finally:
            await conn.close()


async def test_postgres_schema_named_with_a_double_quote(pg_url: str) -> None:
    # A configured schema name is an identifier, quoted: a '"' in it is doubled, not the
    # end of the name (the tables land in exactly the schema named, made on first open).
    name = f'linkloop "quoted" {secrets.token_hex(4)}'
    admin = await pg.connect(pg_url)
    try:
        store = await PostgresStore.open(pg_url, schema=name)
        try:
            await store.create_merchant(Merchant("m1", "One"))
            assert [m.id for m in await store.list_merchants()] == ["m1"]
        finally:
            await store.close()
        assert await admin.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'merchants'",
            name) == 1
    finally:
        # PostgreSQL's own quoting, not the store's.
        await admin.execute(await admin.fetchval(
            "SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text)", name))
        await admin.close()


def test_split_schema_takes_out_the_schema_parameter_only() -> None:
    """LinkLoop's ``schema=`` leaves the URL (asyncpg would send it to the server as a
    setting, which the server refuses); every other parameter stays, blank ones too."""
    base = "postgresql://linkloop@db.example:5432/linkloop"
    assert split_schema(base) == (base, None)
    assert split_schema(f"{base}?sslmode=require&schema=tenant&application_name=") == (
        f"{base}?sslmode=require&application_name=", "tenant")
    assert split_schema(f"{base}?schema=") == (base, None)  # blank: the search path's
    assert split_schema(f"{base}?schema=one&schema=two") == (base, "two")


async def test_schema_version_is_the_last_migration(database: Database) -> None:
    store = await database.open()
    try:
        migrations = SQLITE_MIGRATIONS if database.engine == "sqlite" else POSTGRES_MIGRATIONS
        assert await store.schema_version() == migrations[-1][0] == max(
            await database.versions())
    finally:
        await store.close()


async def test_postgres_unreachable_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=r"unavailable: .*Connect call failed"):
        await PostgresStore.open("postgresql://postgres@127.0.0.1:1/test",
                                  timeout_seconds=2)


async def test_postgres_lost_connection_is_unavailable_then_recovers(
        pg_url: str, pg_schema: str) -> None:
    store = await PostgresStore.open(pg_url, schema=pg_schema, min_size=1, max_size=1)
    await _merchants(store)
    pid = await _product(store)
    async with store._conn() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    admin = await pg.connect(pg_url, pg_schema)
    try:
        # Hold the batch mid-transaction, then cut its connection: an unclear failure.
        await admin.execute("BEGIN; LOCK TABLE pending_counts IN ACCESS EXCLUSIVE MODE")
        batch = asyncio.create_task(store.record([click(1, product=pid)], []))
        await until(lambda: admin.fetchval("SELECT wait_event_type = 'Lock' FROM "
                                           "pg_stat_activity WHERE pid = $1", backend),
                    interval=0.01, what="the batch waiting at its counts")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend)
        await admin.execute("ROLLBACK")
    finally:
        await admin.close()
    # The server cut the connection: unavailable, not a timeout (none was reached).
    with pytest.raises(StoreUnavailable, match=r"^PostgreSQL unavailable: "):
        await batch
    # The recorder's way: the same batch again, now on a fresh connection, counted once.
    await store.record([click(1, product=pid)], [])
    await store.record([click(1, product=pid)], [])
    rows = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01", by="platform")
    assert [r.clicks for r in rows] == [1]
    await store.ping()  # the health check's answer: up
    await store.close()
    with pytest.raises(StoreUnavailable):  # a closed pool is "unavailable", not a crash
        await store.record([click(2, product=pid)], [])
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_postgres_open_gives_up_at_the_timeout_when_packets_vanish(pg_url: str) -> None:
    # A gateway starting while the database's host swallows every packet: the open fails
    # after timeout_seconds (the process can say so and exit), not after asyncpg's minute.
    from urllib.parse import urlsplit

    from .tcp_proxy import tcp_proxy

    server = urlsplit(pg_url)
    async with tcp_proxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        through = server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}").geturl()
        proxy.black_hole()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await asyncio.wait_for(PostgresStore.open(through, timeout_seconds=1), DEADLINE)


async def test_postgres_with_a_call_limit_a_slow_call_goes_on_and_a_silent_server_does_not(
        pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The click writer's store (``call_limit``): a batch whose own turns are slow (the
    # loop held by other work, as on a busy CPU) is not cut off at ``timeout_seconds``,
    # but a statement the server does not answer (a lock held elsewhere) still gives up
    # then, not at the call limit.
    store = await PostgresStore.open(pg_url, schema=pg_schema, timeout_seconds=0.5,
                                     call_limit=3 * DEADLINE)
    try:
        pid, other = await _two_products(store)
        record = PostgresStore._record

        async def on_a_busy_cpu(conn: Any, clicks: Sequence[Click],
                                events: Sequence[Event]) -> int:
            # The scenario: the loop held, this task's next turn comes a second late.
            time.sleep(1.0)  # noqa: ASYNC251
            return await record(conn, clicks, events)

        monkeypatch.setattr(PostgresStore, "_record", staticmethod(on_a_busy_cpu))
        await store.record([click(1, product=pid)], [])
        monkeypatch.setattr(PostgresStore, "_record", staticmethod(record))
        admin = await pg.connect(pg_url, pg_schema)
        try:
            # The batch's counts go to pending_counts (pending.py): it waits there.
            await admin.execute("BEGIN; LOCK TABLE pending_counts IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(
                    store.record([click(2, merchant="m2", product=other)], []), DEADLINE)
            await admin.execute("ROLLBACK")
        finally:
            await admin.close()
        for merchant, clicks in (("m1", [1]), ("m2", [])):
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [r.clicks for r in rows] == clicks
    finally:
        await store.close()


async def test_postgres_calls_give_up_at_the_timeout_when_packets_vanish(
        pg_url: str, pg_schema: str) -> None:
    from urllib.parse import urlsplit

    from .tcp_proxy import tcp_proxy

    server = urlsplit(pg_url)
    async with tcp_proxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        through = server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}").geturl()
        store = await PostgresStore.open(through, schema=pg_schema, timeout_seconds=1,
                                         max_size=2)
        try:
            pid, other = await _two_products(store)
            proxy.black_hole()
            # A transaction on the pooled connection, then reads needing new connections:
            # each bounded by the timeout, not by TCP giving up.
            calls = [store.record([click(1, product=pid), click(2, merchant="m2",
                                                                product=other)], []),
                     store.link("code0001"), store.ping()]
            for call in calls:
                with pytest.raises(StoreUnavailable, match=r"within 1 s|unavailable"):
                    await asyncio.wait_for(call, 5)
            proxy.forward()
            # Back: fresh connections; the batch, sent again, counts once per merchant.
            for _ in range(2):
                await store.record([click(1, product=pid),
                                    click(2, merchant="m2", product=other)], [])
            for merchant in ("m1", "m2"):
                rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                         by="platform")
                assert [r.clicks for r in rows] == [1]
        finally:
            proxy.forward()
            await store.close()


async def _check_forget_or_import(store: Store, call: str) -> None:
    """What a forget of m1's visitor, or an import of m1's rollups, leaves: m2 untouched."""
    m1, m2 = [[(r.clicks, r.unique_visitors) for r in await store.stats(
        merchant, from_day="2026-11-01", to_day="2026-11-01", by="platform")]
        for merchant in ("m1", "m2")]
    assert (m1, m2) == (([(1, 0)], [(1, 1)]) if call == "forget"
                        else ([(2, 1)], [(1, 1)]))


@pytest.mark.parametrize("call", ["forget", "import", "export"])
async def test_sqlite_calls_over_a_whole_history_are_not_cut_off_at_the_call_timeout(
        tmp_path: Path, call: str) -> None:
    # A forget, an import or an export (which folds what is set aside first) may take
    # longer than a request may: cut off, it was reported failed and then went on and
    # committed on its thread all the same.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=20, timeout_seconds=0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        pid, other = await _two_products(store)
        await store.record([click(1, product=pid, visitor="a"),
                            click(2, merchant="m2", product=other, visitor="a")], [])
        rows, sketches = await store.export_rollups("m1", before_day="2026-11-02")
        holder.execute("BEGIN IMMEDIATE")  # the call waits longer than the timeout
        long: Coroutine[Any, Any, object] = (
            store.forget_visitor("a", "m1") if call == "forget"
            else store.add_rollups(rows, sketches) if call == "import"
            else store.export_rollups("m1", before_day="2026-11-02"))
        started = asyncio.create_task(long)
        # A call made after it gives up at the timeout; the long one, waiting longer than
        # that by then, still goes on.
        with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
            await store.update_merchant("m2", name="Two, renamed")
        assert not started.done()
        holder.execute("ROLLBACK")
        if call == "export":
            assert await asyncio.wait_for(started, 20) == (rows, sketches)
        else:
            await asyncio.wait_for(started, 20)
            await _check_forget_or_import(store, call)
    finally:
        holder.close()
        await store.close()


async def _outlasts_the_call_timeout(pg_url: str, pg_schema: str, table: str, statement: str,
                                     long: Coroutine[Any, Any, T],
                                     short: Callable[[], Awaitable[object]]) -> T:
    """Run ``long`` (a call of a store opened with ``timeout_seconds=0.5``) while another
    session holds ``table``; once ``long`` waits on it (its statement has ``statement`` in
    it), a call made after it on the same lock, ``short``, gives up at the timeout, and
    ``long``, waiting longer than that by then, still goes on. What ``long`` returns."""
    admin = await pg.connect(pg_url, pg_schema)
    try:
        await admin.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        started = asyncio.create_task(long)

        async def waits() -> bool:
            # Within a transaction the server keeps showing its first look at the
            # sessions (a snapshot) unless told to look again.
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND position($1 IN query) > 0", statement))

        await until(waits, what=f"the call waiting on {table}")
        with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
            await short()
        assert not started.done()
        await admin.execute("ROLLBACK")
    finally:
        await admin.close()
    return await asyncio.wait_for(started, 20)


async def test_postgres_export_of_rollups_is_not_cut_off_at_the_call_timeout(
        pg_url: str, pg_schema: str) -> None:
    # An export (``linkloop export --rollups-before``) reads a merchant's whole history: it
    # may wait or read for longer than a request may, and must not fail at that limit.
    store = await PostgresStore.open(pg_url, schema=pg_schema, timeout_seconds=0.5)
    try:
        pid, other = await _two_products(store)
        await store.record([click(1, product=pid, day="2026-10-01", visitor="a"),
                            click(2, product=pid, day="2026-10-02", visitor="b", bot=True),
                            click(3, merchant="m2", product=other, day="2026-10-01")], [])
        rows, sketches = await _outlasts_the_call_timeout(
            # The export folds what is set aside first, into rollups among others.
            pg_url, pg_schema, "rollups", "INSERT INTO rollups",
            store.export_rollups("m1", before_day="2026-11-01"),
            lambda: store.stats("m2", from_day="2026-10-01", to_day="2026-10-01",
                                by="platform", product_id=other))  # read from rollups
        counts = {key: dict(zip(COUNTERS, values, strict=True)) for key, values in rows}
        assert list(counts) == [("m1", pid, "2026-10-01", "taobao", ""),
                                ("m1", pid, "2026-10-02", "taobao", "")]
        assert [(c["clicks"], c["bot_clicks"]) for c in counts.values()] == [(1, 0), (0, 1)]
        assert {key[0] for key, _ in sketches} == {"m1"} and sketches
    finally:
        await store.close()


@pytest.mark.parametrize("call", ["forget", "import", "prune", "reseal", "migrate"])
async def test_postgres_calls_over_a_whole_history_are_not_cut_off_at_the_call_timeout(
        pg_url: str, pg_schema: str, call: str) -> None:
    # A forget, an import, a prune, a reseal or a migration may wait or work longer than a
    # request may; cut off at that limit, it would fail (a first prune or reseal of a big
    # database every time it is tried, a gateway's start behind another's migration).
    old_key = secrets.token_bytes(32)
    store = await PostgresStore.open(pg_url, schema=pg_schema, timeout_seconds=0.5,
                                     secrets=SecretBox([old_key]))
    try:
        pid, other = await _two_products(store)
        await store.record([click(1, product=pid, visitor="a"),
                            click(2, merchant="m2", product=other, visitor="a")], [])
        for merchant in ("m1", "m2"):
            await store.put_entry(Entry(merchant, "contact_way", {"users": ["sales"]},
                                        {"secret": f"s-{merchant}"}))
            await store.accept_callback(merchant, f"n-{merchant}", f"<xml>{merchant}</xml>")
        for item in await store.pending_callbacks(10):
            await store.finish_callback(item.id)
        if call == "forget":
            await _outlasts_the_call_timeout(
                pg_url, pg_schema, "clicks", "FROM clicks WHERE visitor",
                store.forget_visitor("a", "m1"),
                lambda: store.export_clicks("m2", after="", limit=10))
        elif call == "import":
            rows, sketches = await store.export_rollups("m1", before_day="2026-11-02")
            await _outlasts_the_call_timeout(
                pg_url, pg_schema, "rollups", "WITH batch AS MATERIALIZED",
                store.add_rollups(rows, sketches),
                lambda: store.stats("m2", from_day="2026-11-01", to_day="2026-11-01",
                                    by="platform", product_id=other))
        elif call == "prune":
            pruned = await _outlasts_the_call_timeout(
                pg_url, pg_schema, "wecom_inbox", "DELETE FROM wecom_inbox",
                store.prune_raw(before_day="2026-11-02", before_ts=time.time() + 60),
                lambda: store.pending_callbacks(10))
            assert (pruned["clicks"], pruned["callbacks"]) == (2, 2)
        elif call == "migrate":  # another gateway starting, its migrations waiting
            opened = await _outlasts_the_call_timeout(
                pg_url, pg_schema, "schema_migrations", "SELECT version FROM schema_migrations",
                PostgresStore.open(pg_url, schema=pg_schema, timeout_seconds=0.5),
                store.schema_version)
            await opened.close()
        else:  # the key rotated: the secrets are sealed under the old one
            await store.close()
            store = await PostgresStore.open(
                pg_url, schema=pg_schema, timeout_seconds=0.5,
                secrets=SecretBox([secrets.token_bytes(32), old_key]))
            resealed = await _outlasts_the_call_timeout(
                pg_url, pg_schema, "entries", "FROM entries FOR UPDATE",
                store.reseal_secrets(), lambda: store.get_entry("m2"))
            assert resealed == {"entries": 2, "app_credentials": 0}
        if call in ("forget", "import"):
            await _check_forget_or_import(store, call)
    finally:
        await store.close()


async def test_sqlite_calls_give_up_at_the_timeout(tmp_path: Path) -> None:
    # Waiting on a lock up to 60 s, but a call may take 0.5 s in all.
    store = await SQLiteStore.open(tmp_path / "slow.db", busy_timeout=60, timeout_seconds=0.5)
    pid, other = await _two_products(store)
    blocker = sqlite3.connect(tmp_path / "slow.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
            await asyncio.wait_for(store.record([click(1, product=pid)], []), 5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The write it gave up on went in once the lock was free; sent again, it counts once.
    await store.record([click(1, product=pid), click(2, merchant="m2", product=other)], [])
    for merchant in ("m1", "m2"):
        rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                 by="platform")
        assert [r.clicks for r in rows] == [1]
    await store.close()


async def test_a_sqlite_call_cancelled_as_it_finishes_stays_cancelled(tmp_path: Path) -> None:
    # Python 3.11's wait_for returned the result of a call cancelled just as its statement
    # finished: the link watcher, cancelled on shutdown, then polled on forever and the
    # gateway never exited (Ctrl-C hung one stop in four).
    import threading

    store = await SQLiteStore.open(tmp_path / "cancel.db", timeout_seconds=5)
    gate = threading.Event()

    def statement() -> str:
        gate.wait()
        return "done"

    call = asyncio.create_task(store._run(store._reader, statement))
    await asyncio.sleep(0)  # the call's first step: it now awaits its thread
    gate.set()
    # Hold the loop until the thread is past the statement (its one thread takes jobs in
    # turn): the statement's result is queued on the loop before the cancel.
    store._reader.submit(lambda: None).result()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await store.close()


# --- the channel dimension and staff logins (migration 3), on every engine -----------------
def tagged(n: int, channel: str | None, *, visitor: str = "v1", ts: float = 1.0,
           platform: str = "taobao", product: int = 1) -> Click:
    return Click(id=f"click{n:08d}", merchant_id="m1", product_id=product, ts=ts,
                 day="2026-11-01", platform=platform, source="ua", visitor=visitor,
                 ip_hash="h", channel=channel)


async def test_rollups_carry_the_channel_and_events_follow_their_click(store: Store) -> None:
    await _merchants(store)
    pid = await _product(store)
    # Visitor a comes first through "live", then again untagged: one unique visitor, "live".
    await store.record([tagged(1, "live", visitor="a", ts=1.0, product=pid),
                        tagged(2, None, visitor="a", ts=2.0, product=pid),
                        tagged(3, None, visitor="b", ts=3.0, product=pid)],
                       [event(1, product_id=pid, click_id="click00000001")])
    # Events of later batches find their click's channel in storage; an unknown click: ''.
    later = [event(2, "entry", product_id=pid, click_id="click00000001"),
             event(3, "add", product_id=pid, click_id="click00000003"),
             event(4, "storefront_open", product_id=pid, click_id="click00009999")]
    await store.record([], later)
    await store.record([], later)  # a replay counts once

    def figures(rows: list) -> dict[str, tuple[int, ...]]:  # type: ignore[type-arg]
        return {r.key["channel"]: (r.clicks, r.unique_visitors, r.storefront_opens, r.entries,
                                   r.adds) for r in rows}

    by_channel = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                                   by="channel")
    # Unique visitors are distinct within each row: a came through both.
    assert figures(by_channel) == {"": (2, 2, 1, 0, 1), "live": (1, 1, 1, 1, 0)}
    live = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                             by="platform", channel="live")
    assert [(r.key["platform"], r.clicks, r.storefront_opens, r.entries) for r in live] == [
        ("taobao", 1, 1, 1)]
    # Without a channel filter, the figures are what they were before the dimension.
    everything = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform")
    assert [(r.clicks, r.unique_visitors, r.storefront_opens, r.entries, r.adds)
            for r in everything] == [(3, 2, 2, 1, 1)]
    assert await store.stats("m2", from_day="2026-11-01", to_day="2026-11-01", by="channel",
                             channel="live") == []


async def test_a_click_of_another_merchant_lends_no_channel(store: Store) -> None:
    await _merchants(store)
    other = await _product(store, "m2", code="code0002")
    pid = await _product(store)
    await store.record([Click(id="click00000001", merchant_id="m2", product_id=other, ts=1.0,
                              day="2026-11-01", platform="jd", source="ua", visitor="x",
                              ip_hash="h", channel="theirs")], [])
    await store.record([], [event(1, product_id=pid, click_id="click00000001")])
    rows = await store.stats("m1", from_day="2026-11-01", to_day="2026-11-01", by="channel")
    assert [(r.key["channel"], r.storefront_opens) for r in rows] == [("", 1)]


def _user(email: str = "anna@example.com", merchant: str = "m1", role: str = "marketing"
          ) -> User:
    return User(email, merchant, role, "scrypt$16384$8$1$c2FsdA==$aGFzaA==")  # type: ignore[arg-type]


async def test_users_are_created_once_and_read_back(store: Store) -> None:
    await _merchants(store)
    created = await store.create_user(_user())
    assert created.created_at > 0
    got = await store.get_user("anna@example.com")
    assert got is not None and (got.merchant_id, got.role, got.password_hash) == (
        "m1", "marketing", created.password_hash)
    assert (got.failed_logins, got.locked_until, got.last_login_at, got.sessions_after) == (
        0, 0.0, None, 0.0)
    with pytest.raises(UserExists):
        await store.create_user(_user(merchant="m2", role="merchant"))
    # A login for a merchant that does not exist: said so (not "the email is taken").
    with pytest.raises(StoreError, match="no merchant 'ghost'") as refused:
        await store.create_user(_user("bob@example.com", merchant="ghost"))
    assert not isinstance(refused.value, UserExists)
    assert await store.get_user("bob@example.com") is None
    assert await store.get_user("nobody@example.com") is None


async def test_failed_logins_lock_and_a_success_starts_the_count_again(store: Store) -> None:
    await _merchants(store)
    await store.create_user(_user())
    now = 1_000_000.0
    for expected in (1, 2):
        user = await store.record_login_failure("anna@example.com", now=now, max_failures=3,
                                                lock_seconds=60)
        assert user is not None and user.failed_logins == expected and not user.locked(now)
    await store.record_login_success("anna@example.com", now=now + 1)
    got = await store.get_user("anna@example.com")
    assert got is not None and got.failed_logins == 0 and got.last_login_at == now + 1
    # Three in a row (concurrently, as from several gateways): locked for a minute.
    results = await asyncio.gather(*(store.record_login_failure(
        "anna@example.com", now=now + 2, max_failures=3, lock_seconds=60) for _ in range(3)))
    assert sorted(u.failed_logins for u in results if u) == [0, 1, 2]
    locked = await store.get_user("anna@example.com")
    assert locked is not None and locked.locked(now + 61) and not locked.locked(now + 62)
    assert await store.record_login_failure("nobody@example.com", now=now, max_failures=3,
                                            lock_seconds=60) is None


async def test_end_sessions_only_moves_forward(store: Store) -> None:
    await _merchants(store)
    await store.create_user(_user())
    await store.end_sessions("anna@example.com", now=200.5)
    await store.end_sessions("anna@example.com", now=100.0)  # a late, older logout
    got = await store.get_user("anna@example.com")
    assert got is not None and got.sessions_after == 200.5


async def test_unlock_lifts_one_login_s_lock_only(store: Store) -> None:
    await _merchants(store)
    for user in (_user(), _user("bob@example.com", merchant="m2")):
        await store.create_user(user)
        for _ in range(3):
            await store.record_login_failure(user.email, now=1000.0, max_failures=3,
                                             lock_seconds=60)
    await store.record_login_failure("anna@example.com", now=1001.0, max_failures=3,
                                     lock_seconds=60)
    before = await store.unlock_user("anna@example.com")
    assert before is not None and before.locked(1010.0) and before.failed_logins == 1
    anna, bob = [await store.get_user(e) for e in ("anna@example.com", "bob@example.com")]
    assert anna is not None and not anna.locked(1010.0) and anna.failed_logins == 0
    assert bob is not None and bob.locked(1010.0)  # another merchant's login stays locked
    assert await store.unlock_user("nobody@example.com") is None


async def test_login_attempts_are_counted_per_address_in_windows(database: Database,
                                                                 store: Store) -> None:
    def take(address: str, now: float) -> Awaitable[float]:
        return store.take_login_attempt(address, now=now, window_seconds=60, max_attempts=3)

    # Taken at once (as by several gateways): exactly three go ahead.
    waits = await asyncio.gather(*(take("hash-a", 1000.0) for _ in range(5)))
    assert sorted(waits) == [0.0, 0.0, 0.0, 60.0, 60.0]
    assert await take("hash-a", 1030.0) == 30.0  # the window opened at the first attempt
    assert await take("hash-b", 1030.0) == 0.0  # another address has its own count
    # A success gives its attempt back.
    await store.give_back_login_attempt("hash-a")
    assert await take("hash-a", 1031.0) == 0.0
    assert await take("hash-a", 1031.0) == 29.0
    assert await take("hash-a", 1059.75) == 0.25  # under a second left: said as it is
    # The window closes: a new one opens, and closed windows are forgotten.
    assert await take("hash-a", 1060.0) == 0.0
    assert await take("hash-c", 1120.0) == 0.0
    assert sorted(await database.fetch("SELECT address FROM login_throttle")) == [
        ("hash-c",)]


_V2_ROLLUP = ("m1", "2026-10-01", 7, "taobao", 5, 4, 1, 3, 2, 1)
#: One of the clicks behind it, as version 1's clicks table kept it (id, merchant, product,
#: ts, day, platform, source, channel, visitor, ip_hash, bot, mobile, os).
_V2_CLICK = ("click00000009", "m1", 7, 1.0, "2026-10-01", "taobao", "ua", None, "v", "h", 0, 1,
             "ios")


async def test_sqlite_migration_3_keeps_the_rollups(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:  # a database as version 2 left it, with figures
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at REAL NOT NULL)")
        for version, script in SQLITE_MIGRATIONS[:2]:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        conn.execute("INSERT INTO merchants VALUES ('m1', 'One', '[]', 0)")
        conn.execute("INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _V2_ROLLUP)
        conn.execute("INSERT INTO clicks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     _V2_CLICK)
    store = await SQLiteStore.open(path)
    try:
        rows = await store.stats("m1", from_day="2026-10-01", to_day="2026-10-01",
                                 by="channel")
        # The counters as they were; unique visitors from the stored clicks (migration 8).
        assert [(r.key["channel"], r.clicks, r.unique_visitors, r.bot_clicks,
                 r.storefront_opens, r.entries, r.adds) for r in rows] == [("", 5, 1, 1, 3, 2, 1)]
        await store.record([Click(id="click00000001", merchant_id="m1", product_id=7, ts=1.0,
                                  day="2026-10-01", platform="taobao", source="ua",
                                  visitor="v", ip_hash="h", channel="live")], [])
        rows = await store.stats("m1", from_day="2026-10-01", to_day="2026-10-01",
                                 by="platform")
        assert [(r.key["platform"], r.clicks) for r in rows] == [("taobao", 6)]
    finally:
        await store.close()


async def test_sqlite_hears_links_changed_by_other_processes(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "links.db")
    await store.create_merchant(Merchant("m1", "One"))
    heard: list[str | None] = []
    watcher = asyncio.create_task(store.watch_links(heard.append))
    try:
        # Another process (a second gateway, the CLI) writes the file.
        with sqlite3.connect(tmp_path / "links.db") as other:
            other.execute("INSERT INTO products (merchant_id, code, title, targets, status, "
                          "created_at, updated_at) VALUES ('m1', 'tea', 'Tea', '{}', "
                          "'active', 0, 0)")
        async def wait_for(expected: list[str | None]) -> None:
            await until(lambda: heard == expected,
                        what=f"heard {expected[:2]} ({len(expected)} in all)")
        await wait_for(["tea"])
        # More changes between two looks than the log keeps: some are gone, so everything
        # must be read again.
        heard.clear()
        with sqlite3.connect(tmp_path / "links.db") as other:
            for n in range(10_001):
                other.execute("UPDATE products SET updated_at = ? WHERE code = 'tea'", (n,))
        await wait_for([None, *["tea"] * 10_000])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await store.close()


async def test_sqlite_link_watcher_goes_on_after_a_failed_look(tmp_path: Path) -> None:
    """A look at the log of changed links that fails (here the table is gone for a while)
    is a warning saying why, and the watcher keeps looking: the change made while it
    failed is heard once the log is back, then later ones, for both merchants' links."""
    import structlog

    path = tmp_path / "links.db"
    store = await SQLiteStore.open(path)
    heard: list[str | None] = []
    with structlog.testing.capture_logs() as logs:
        watcher = asyncio.create_task(store.watch_links(heard.append))
        try:
            await _merchants(store)
            with sqlite3.connect(path) as other:  # another process takes the log away
                other.execute("ALTER TABLE link_changes RENAME TO link_changes_away")
            await until(lambda: any(e["event"] == "links.watch_failed" for e in logs),
                        what="a failed look logged")
            await _product(store, "m1", code="mine")  # logged in the table, wherever it is
            with sqlite3.connect(path) as other:
                other.execute("ALTER TABLE link_changes_away RENAME TO link_changes")
            await until(lambda: heard == ["mine"], what="the change heard after the failure")
            await _product(store, "m2", code="theirs")
            await until(lambda: heard == ["mine", "theirs"], what="and the next one")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await store.close()
    failed = [e for e in logs if e["event"] == "links.watch_failed"]
    assert failed and all("link_changes" in e["error"] for e in failed), failed


async def test_postgres_link_watcher_listens_again_after_losing_its_connection(
        pg_url: str, pg_schema: str) -> None:
    """The watcher's own connection, through a proxy. While the database is away each lost
    try is a warning saying why, the next one waiting twice as long, and nothing is
    forgotten; back, everything is forgotten once (``None``) and both merchants' changes
    are heard. The connection is held past the call timeout, and a silent one is given up
    at the timeout: after a loss the waits start at 0.5 s again. Cancelled (shutdown)
    while the database is silent, the watcher still ends."""
    from urllib.parse import urlsplit

    import structlog

    from gateway.store.postgres import _WATCH_EVERY

    from .tcp_proxy import tcp_proxy
    from .wait import DEADLINE

    server = urlsplit(pg_url)
    writer = await PostgresStore.open(pg_url, schema=pg_schema)
    async with tcp_proxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        # The listener's sessions are named, to see its pings arrive.
        through = server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}",
                                  query=f"application_name={pg_schema}").geturl()
        listener = await PostgresStore.open(through, schema=pg_schema, timeout_seconds=1)
        heard: list[str | None] = []
        admin = await pg.connect(pg_url, pg_schema)

        async def pinged() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND lower(query) = 'select 1'", pg_schema))

        with structlog.testing.capture_logs() as logs:
            def lost() -> list[Any]:
                return [e for e in logs if e["event"] == "store.link_listener_lost"]

            proxy.black_hole()  # the pooled connection's LISTEN, then new ones, unanswered
            watcher = asyncio.create_task(listener.watch_links(heard.append))
            try:
                await until(lambda: len(lost()) >= 2, what="two tries while it is away")
                assert [e["retry_in"] for e in lost()[:2]] == [0.5, 1.0]
                assert all("PostgreSQL" in e["error"] for e in lost()), lost()
                # The second, a new connection's: a timeout, which has no words of its own.
                assert lost()[1]["error"] == "PostgreSQL unavailable: TimeoutError"
                assert heard == []
                proxy.forward()
                await until(lambda: heard == [None], what="listening again")
                _, theirs = await _two_products(writer)  # a change of each merchant's link
                await until(lambda: heard == [None, "code0001", "code0002"],
                            what="both changes heard")
                tries = len(lost())
                # A ping over a connection held longer than the call timeout (1 s) arrives.
                await until(pinged, within=DEADLINE + _WATCH_EVERY, what="a ping arriving")
                assert len(lost()) == tries
                proxy.black_hole()  # the next ping goes unanswered
                await until(lambda: len(lost()) > tries, within=DEADLINE + _WATCH_EVERY,
                            what="the silent connection given up")
                assert lost()[tries]["retry_in"] == 0.5
                proxy.forward()
                await until(lambda: heard.count(None) == 2, what="listening once more")
                await writer.update_product("m2", theirs, {"title": "Again"})
                await until(lambda: heard[-1] == "code0002", what="a change heard after")
                proxy.black_hole()
                watcher.cancel()  # its UNLISTEN goes unanswered, and is given up
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(watcher, DEADLINE)
            finally:
                proxy.forward()
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await admin.close()
                await listener.close()
                await writer.close()


async def test_sqlite_workers_opening_one_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    with sqlite3.connect(path) as conn:  # a database as version 4 left it
        SQLiteStore._migrate(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")
        conn.execute("DROP TRIGGER link_created")
        conn.execute("DROP TRIGGER link_changed")
        conn.execute("DROP TABLE link_changes")
    # Two workers start together: both find version 5 missing, then queue for the lock.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    workers = [sqlite3.connect(path, isolation_level=None, timeout=10,
                               check_same_thread=False) for _ in range(2)]
    migrating = [asyncio.to_thread(SQLiteStore._migrate, conn) for conn in workers]
    tasks = [asyncio.ensure_future(m) for m in migrating]
    # A head start, so both have looked and queue for the lock. A worker that had not looked
    # yet would find the migration done: the same outcome, asserted below.
    await asyncio.sleep(0.3)
    blocker.execute("ROLLBACK")
    blocker.close()
    await asyncio.gather(*tasks)  # neither fails on "table link_changes already exists"
    for conn in workers:
        conn.close()
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [version for version, _ in SQLITE_MIGRATIONS]


async def _at_migration_2(conn: Any) -> None:
    """A schema as PostgreSQL migrations 1 and 2 left it (a database of that version)."""
    await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                       "applied_at DOUBLE PRECISION NOT NULL)")
    for version, script in POSTGRES_MIGRATIONS[:2]:
        await conn.execute(script)
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, 0)", version)


async def test_postgres_migration_3_keeps_the_rollups(pg_url: str, pg_schema: str) -> None:
    conn = await pg.connect(pg_url, pg_schema)
    try:
        await _at_migration_2(conn)
        await conn.execute("INSERT INTO merchants (id, name, created_at) VALUES ('m1', 'One', 0)")
        await conn.execute("INSERT INTO rollups VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                           *_V2_ROLLUP)
        await conn.execute("INSERT INTO clicks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                           "$11, $12, $13)", *_V2_CLICK[:10], False, True, _V2_CLICK[12])
    finally:
        await conn.close()
    store = await PostgresStore.open(pg_url, schema=pg_schema)
    try:
        rows = await store.stats("m1", from_day="2026-10-01", to_day="2026-10-01",
                                 by="channel")
        # The counters as they were; unique visitors from the stored clicks (migration 7).
        assert [(r.key["channel"], r.clicks, r.unique_visitors, r.bot_clicks,
                 r.storefront_opens, r.entries, r.adds) for r in rows] == [("", 5, 1, 1, 3, 2, 1)]
        await store.record([Click(id="click00000001", merchant_id="m1", product_id=7, ts=1.0,
                                  day="2026-10-01", platform="taobao", source="ua",
                                  visitor="v", ip_hash="h", channel="live")], [])
        rows = await store.stats("m1", from_day="2026-10-01", to_day="2026-10-01",
                                 by="channel")
        assert [(r.key["channel"], r.clicks) for r in rows] == [("", 5), ("live", 1)]
    finally:
        await store.close()


async def test_postgres_sketch_backfill_reads_every_page_of_clicks(
        pg_url: str, pg_schema: str) -> None:
    """The visitor sketches are backfilled from all the clicks stored before them, a page
    of 5,000 at a time, with ids like the gateway's."""
    conn = await pg.connect(pg_url, pg_schema)
    try:
        await _at_migration_2(conn)
        for merchant, product, clicks in (("m1", 7, 5001), ("m2", 8, 1)):
            await conn.execute("INSERT INTO merchants (id, name, created_at) VALUES ($1, $1, 0)",
                               merchant)
            await conn.execute("INSERT INTO rollups VALUES ($1, '2026-10-01', $2, 'taobao', "
                               "$3, 0, 0, 0, 0, 0)", merchant, product, clicks)
        # m1's 5,000 clicks of one visitor, then (on the next page) m2's and m1's second's.
        await conn.execute(
            "INSERT INTO clicks SELECT 'AZ' || lpad(n::text, 14, '0'), "
            "CASE n WHEN 5001 THEN 'm2' ELSE 'm1' END, CASE n WHEN 5001 THEN 8 ELSE 7 END, "
            "1.0, '2026-10-01', 'taobao', 'ua', NULL, "
            "CASE WHEN n <= 5000 THEN 'v' ELSE 'w' || n END, 'h', false, true, 'ios' "
            "FROM generate_series(1, 5002) AS n")
    finally:
        await conn.close()
    store = await PostgresStore.open(pg_url, schema=pg_schema)
    try:
        found = [[(r.clicks, r.unique_visitors) for r in await store.stats(
            merchant, from_day="2026-10-01", to_day="2026-10-01", by="platform")]
            for merchant in ("m1", "m2")]
        assert found == [[(5001, 2)], [(1, 1)]]
    finally:
        await store.close()


def test_delta_rows_are_the_key_then_the_counters_in_order() -> None:
    """delta_rows() are what pending_counts takes column by column: the rollups key, then
    COUNTERS in order (rollup.fold_statement reads them by those names)."""
    from gateway.store import COUNTERS
    from gateway.store.rollup import RollupDelta, delta_rows

    delta = RollupDelta()
    for n, name in enumerate(COUNTERS, start=1):
        delta.bump(name, n)
    key = ("m1", 7, "2026-02-28", "jd", "live")
    assert delta_rows({key: delta}) == [(*key, *range(1, len(COUNTERS) + 1))]
    assert "unique_visitors" not in COUNTERS  # sketches, never a sum


# --- coarser rollups (migration 4): monthly_rollups and daily_totals, on every engine -------
def test_month_split_cuts_whole_months_out_of_a_range() -> None:
    assert month_split("2026-02-10", "2026-02-10") == [("day", "2026-02-10", "2026-02-10")]
    assert month_split("2026-03-05", "2026-03-31") == [("day", "2026-03-05", "2026-03-31")]
    assert month_split("2026-02-01", "2026-02-28") == [("month", "2026-02", "2026-02")]
    assert month_split("2024-02-01", "2024-02-28") == [("day", "2024-02-01", "2024-02-28")]
    assert month_split("2024-02-01", "2024-02-29") == [("month", "2024-02", "2024-02")]
    assert month_split("2026-01-30", "2026-04-02") == [
        ("day", "2026-01-30", "2026-01-31"), ("month", "2026-02", "2026-03"),
        ("day", "2026-04-01", "2026-04-02")]
    assert month_split("2025-11-23", "2026-11-22") == [
        ("day", "2025-11-23", "2025-11-30"), ("month", "2025-12", "2026-10"),
        ("day", "2026-11-01", "2026-11-22")]
    assert month_split("2025-12-01", "2026-01-31") == [("month", "2025-12", "2026-01")]
    assert month_split("2026-01-31", "2026-02-01") == [("day", "2026-01-31", "2026-02-01")]
    assert month_split("2026-02-01", "2026-03-01") == [
        ("month", "2026-02", "2026-02"), ("day", "2026-03-01", "2026-03-01")]
    # Not plain ISO dates, or no day after the last: left to the per-day rows, as before.
    assert month_split("20260201", "20260228") == [("day", "20260201", "20260228")]
    assert month_split("2026-02-01", "9999-12-31") == [("day", "2026-02-01", "9999-12-31")]
    assert month_split("2026-02-01", "nonsense") == [("day", "2026-02-01", "nonsense")]


_FIRST_DAY = date(2026, 1, 27)
_LAST_DAY = date(2026, 5, 4)


def _traffic(products: dict[str, list[int]], seed: int = 7) -> tuple[list[Click], list[Event]]:
    """Clicks and events of two merchants over months, partial ones at both ends: bots,
    returning visitors, channels, every outcome, events after their click or before it (a
    journal replayed out of order), another merchant's click or an unknown one, adds with
    no product. Timestamps rise with the ids.
    """
    rnd = random.Random(seed)
    clicks: list[Click] = []
    events: list[Event] = []
    days = (_LAST_DAY - _FIRST_DAY).days + 1
    for n in range(900):
        merchant = "m1" if n % 5 else "m2"
        bot = rnd.random() < 0.1
        clicks.append(Click(
            id=f"click{n:08d}", merchant_id=merchant,
            product_id=rnd.choice(products[merchant]), ts=float(n),
            day=(_FIRST_DAY + timedelta(days=rnd.randrange(days))).isoformat(),
            platform=rnd.choice(("taobao", "jd", "web")), source="ua",
            visitor=f"{merchant}-v{rnd.randrange(12)}", ip_hash="h", bot=bot,
            channel=rnd.choice((None, None, "live", "ads")),
            outcome="preview" if bot else rnd.choice(
                ("redirect", "landing", "guide", "gone", ""))))
    for n in range(400):
        kind = rnd.choice(("storefront_open", "entry", "add", "chat", "lost"))
        # Any click: event n is recorded in batch n // 50, so a quarter of them come before
        # their click's batch.
        target = rnd.choice(clicks)
        click_id = rnd.choice((target.id, target.id, target.id, "click99999999", None))
        merchant = "m1" if rnd.random() < 0.9 else "m2"  # sometimes another merchant's click
        product: int | None = target.product_id if merchant == target.merchant_id else (
            rnd.choice(products[merchant]))
        if kind in ("add", "chat") and rnd.random() < 0.3:
            product = None  # an add whose state could not be traced
        events.append(Event(
            id=f"event{n:08d}", merchant_id=merchant, product_id=product, kind=kind,  # type: ignore[arg-type]
            platform=rnd.choice(("taobao", "jd", "web")), ts=900.0 + n,
            day=(_FIRST_DAY + timedelta(days=rnd.randrange(days))).isoformat(),
            click_id=click_id))
    return clicks, events


_OUTCOME_COUNTERS = {"redirect": ("redirects", "storefront_opens"), "landing": ("landings",),
                     "guide": ("guides",)}
_EVENT_COUNTERS = {"storefront_open": "storefront_opens", "entry": "entries", "add": "adds",
                   "chat": "chats", "lost": "lost_contacts"}


def _expected(clicks: list[Click], events: list[Event], codes: dict[int, str], from_day: str,
              to_day: str, by: str, product_id: int | None, platform: str | None,
              channel: str | None) -> list[tuple[Any, ...]]:
    """Merchant m1's rows, worked out here from the raw rows (not by the store's code):
    counters summed, unique visitors as sets, each event where its click (once stored)
    came from."""
    counts: dict[Any, list[int]] = defaultdict(lambda: [0] * len(METRICS))
    visitors: dict[Any, set[str]] = defaultdict(set)

    def row(product: int, day: str, plat: str, chan: str) -> Any:
        if not (from_day <= day <= to_day and product_id in (None, product)
                and platform in (None, plat) and channel in (None, chan)):
            return None
        return {"product": product, "day": day, "platform": plat, "channel": chan,
                "total": ""}[by]

    for c in clicks:
        key = row(c.product_id, c.day, c.platform, c.channel or "")
        if c.merchant_id != "m1" or key is None:
            continue
        if c.bot:
            counts[key][METRICS.index("bot_clicks")] += 1
            continue
        counts[key][METRICS.index("clicks")] += 1
        for counter in _OUTCOME_COUNTERS.get(c.outcome, ()):
            counts[key][METRICS.index(counter)] += 1
        visitors[key].add(c.visitor)
    stored = {c.id: c for c in clicks if c.merchant_id == "m1"}
    for e in events:
        origin = stored.get(e.click_id or "")
        if e.merchant_id != "m1":
            continue
        key = (row(e.product_id or origin.product_id, e.day, origin.platform,
                   origin.channel or "") if origin
               else row(e.product_id or 0, e.day, e.platform, ""))
        if key is not None:
            counts[key][METRICS.index(_EVENT_COUNTERS[e.kind])] += 1
    for key, found in visitors.items():
        counts[key][METRICS.index("unique_visitors")] = len(found)
    if by == "total":
        return [((), *counts[""])]
    if by == "product":
        return [((p or None, codes.get(p), "Tea" if p in codes else None), *figures)
                for p, figures in sorted(counts.items())]
    return [((key,), *figures) for key, figures in sorted(counts.items())]


def _got(rows: list[Any], by: str) -> list[tuple[Any, ...]]:
    assert all(r.unique_visitors_error == 0 for r in rows)  # a few visitors: exact
    return [(tuple(r.key.values()), *(getattr(r, m) for m in METRICS)) for r in rows]


def _ranges(seed: int = 11) -> list[tuple[str, str]]:
    edges = [
        ("2026-02-10", "2026-02-10"),  # one day
        ("2026-03-05", "2026-03-20"),  # within one month
        ("2026-02-01", "2026-02-28"),  # exactly one whole month
        ("2026-03-01", "2026-04-30"),  # two whole months
        ("2026-01-30", "2026-04-02"),  # three months and partial ends
        ("2026-02-01", "2026-04-15"),  # a whole start, a partial end
        ("2026-01-15", "2026-03-31"),  # a partial start, a whole end
        ("2026-01-31", "2026-02-01"),  # two days across a month boundary
        ("2026-02-01", "2026-03-01"),  # a whole month and the next one's first day
        ("2026-01-27", "2026-05-04"),  # exactly the traffic's first and last days
        ("2025-06-01", "2026-05-31"),  # a year
        ("2026-01-01", "2026-12-31"),  # a calendar year
        ("2024-02-01", "2024-02-29"),  # a whole month without traffic
    ]
    rnd = random.Random(seed)
    span = (_LAST_DAY - _FIRST_DAY).days + 20
    for _ in range(10):
        start = _FIRST_DAY - timedelta(days=10) + timedelta(days=rnd.randrange(span))
        end = start + timedelta(days=rnd.randrange(90))
        edges.append((start.isoformat(), end.isoformat()))
    return edges


async def test_stats_over_any_range_and_grouping_equal_the_raw_rows(store: Store) -> None:
    await _merchants(store)
    p1 = await _product(store)
    p2 = await _product(store, code="code0002")
    other = await _product(store, "m2", code="code0003")
    clicks, events = _traffic({"m1": [p1, p2], "m2": [other]})
    for start in range(0, len(clicks), 100):  # in time order, as the recorder's batches
        batch = clicks[start:start + 100]  # with events[start // 2:...]: see _traffic
        await store.record(random.Random(start).sample(batch, len(batch)),
                           events[start // 2:start // 2 + 50])
    await store.record(clicks[200:300], events[100:150])  # a replay counts once
    codes = {p1: "code0001", p2: "code0002"}
    for from_day, to_day in _ranges():
        for by in ("platform", "product", "day", "channel", "total"):
            for product_id in (None, p1, other):
                for platform in (None, "jd"):
                    for channel in (None, "", "live"):
                        rows = await store.stats(
                            "m1", from_day=from_day, to_day=to_day, by=by,  # type: ignore[arg-type]
                            product_id=product_id, platform=platform, channel=channel)
                        assert _got(rows, by) == _expected(
                            clicks, events, codes, from_day, to_day, by, product_id, platform,
                            channel), (from_day, to_day, by, product_id, platform, channel)


_SUMS = ", ".join(f"SUM({c})" for c in COUNTERS)
_MONTHS_FROM_DAYS = (
    f"SELECT merchant_id, substr(day, 1, 7), product_id, platform, channel, {_SUMS} "
    "FROM rollups GROUP BY merchant_id, substr(day, 1, 7), product_id, platform, channel "
    "ORDER BY 1, 2, 3, 4, 5")
_MONTHS = (f"SELECT merchant_id, month, product_id, platform, channel, {', '.join(COUNTERS)} "
           "FROM monthly_rollups ORDER BY 1, 2, 3, 4, 5")
_TOTALS_FROM_DAYS = (
    f"SELECT merchant_id, day, platform, channel, {_SUMS} "
    "FROM rollups GROUP BY merchant_id, day, platform, channel ORDER BY 1, 2, 3, 4")
_TOTALS = (f"SELECT merchant_id, day, platform, channel, {', '.join(COUNTERS)} "
           "FROM daily_totals ORDER BY 1, 2, 3, 4")


async def _assert_coarser_rollups_agree(database: Database) -> None:
    assert await database.fetch(_MONTHS) == await database.fetch(_MONTHS_FROM_DAYS)
    assert await database.fetch(_TOTALS) == await database.fetch(_TOTALS_FROM_DAYS)


async def test_a_replayed_batch_counts_once_in_every_rollup_table(database: Database) -> None:
    store = await database.open(fold_visitors=1)  # every batch folded: the tables are whole
    try:
        await _merchants(store)
        pid = await _product(store)
        batch = [click(1, product=pid, day="2026-10-31", visitor="a"),
                 click(2, product=pid, day="2026-11-01", visitor="a"),
                 click(3, product=pid, day="2026-11-30", visitor="b", bot=True)]
        events = [event(1, product_id=pid, click_id="click00000002"),
                  event(2, "add", product_id=None, day="2026-11-15")]
        await store.record(batch, events)
        await store.record(batch, events)
        await store.record([click(4, product=pid, day="2026-11-02", visitor="a")], [])
        assert await database.fetch(
            "SELECT month, product_id, clicks, bot_clicks, storefront_opens, "
            "adds FROM monthly_rollups ORDER BY month, product_id") == [
            ("2026-10", pid, 1, 0, 0, 0), ("2026-11", 0, 0, 0, 0, 1),
            ("2026-11", pid, 2, 1, 1, 0)]
        await _assert_coarser_rollups_agree(database)
        rows = await store.stats("m1", from_day="2026-10-01", to_day="2026-11-30",
                                 by="product")
        # Visitor a came on three days of two months: one visitor.
        assert [(r.key["product_id"], r.clicks, r.unique_visitors, r.bot_clicks, r.adds)
                for r in rows] == [(None, 0, 0, 0, 1), (pid, 3, 1, 1, 0)]
    finally:
        await store.close()


_V3_ROLLUPS = [  # (merchant_id, day, product_id, platform, channel, metrics...)
    ("m1", "2026-01-31", 7, "taobao", "", 5, 4, 1, 3, 2, 1),
    ("m1", "2026-02-01", 7, "taobao", "", 2, 2, 0, 1, 0, 0),
    ("m1", "2026-02-01", 7, "taobao", "live", 6, 5, 0, 2, 1, 1),
    ("m1", "2026-02-20", 7, "taobao", "", 3, 3, 1, 0, 1, 0),
    ("m1", "2026-02-28", 7, "jd", "", 1, 1, 0, 0, 0, 0),
    ("m1", "2026-02-28", 8, "taobao", "", 4, 3, 2, 1, 1, 0),
    ("m1", "2026-03-01", 0, "web", "", 0, 0, 0, 0, 0, 2),
    ("m2", "2026-02-10", 9, "taobao", "", 9, 9, 9, 9, 9, 9),
]


async def _at_version_3(database: Database, apply: Callable[[str], Awaitable[None]]) -> None:
    """Migrations 1-3 and their schema_migrations rows, then rollups as version 3 kept them."""
    migrations = SQLITE_MIGRATIONS if database.engine == "sqlite" else POSTGRES_MIGRATIONS
    await apply("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at DOUBLE PRECISION NOT NULL)")
    for version, script in migrations[:3]:
        await apply(script)
        await apply(f"INSERT INTO schema_migrations VALUES ({version}, 0)")
    await apply("INSERT INTO merchants (id, name, created_at) VALUES ('m1', 'One', 0)")
    for row in _V3_ROLLUPS:
        values = ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in row)
        await apply(f"INSERT INTO rollups (merchant_id, day, product_id, platform, channel, "
                    f"clicks, unique_visitors, bot_clicks, storefront_opens, entries, adds) "
                    f"VALUES ({values})")


async def test_migration_4_backfills_the_coarser_rollups(database: Database,
                                                         tmp_path: Path) -> None:
    if database.engine == "sqlite":
        conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)

        async def apply(script: str) -> None:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)

        await _at_version_3(database, apply)
        conn.close()
    else:
        rows = await database.fetch("SELECT current_schema()")
        plain = await pg.connect(pg.postgres_url(), rows[0][0])

        async def apply_pg(script: str) -> None:
            await plain.execute(script)

        try:
            await _at_version_3(database, apply_pg)
        finally:
            await plain.close()
    assert await database.versions() == [1, 2, 3]
    store = await database.open(fold_visitors=1)  # every batch folded: the tables are whole
    try:
        latest = SQLITE_MIGRATIONS if database.engine == "sqlite" else POSTGRES_MIGRATIONS
        assert await database.versions() == [version for version, _ in latest]
        await _assert_coarser_rollups_agree(database)
        months = await database.fetch(
            "SELECT merchant_id, month, product_id, platform, channel, clicks, bot_clicks, "
            "storefront_opens, entries, adds FROM monthly_rollups")
        assert len(months) == 7 and ("m1", "2026-02", 7, "taobao", "", 5, 1, 1, 1, 0) in months
        rows = await store.stats("m1", from_day="2026-02-01", to_day="2026-02-28",
                                 by="product")  # one whole month: monthly_rollups alone
        assert [(r.key["product_id"], r.clicks, r.bot_clicks,
                 r.storefront_opens, r.entries, r.adds) for r in rows] == [
            (7, 12, 1, 3, 2, 1), (8, 4, 2, 1, 1, 0)]
        rows = await store.stats("m1", from_day="2026-01-31", to_day="2026-03-01", by="day")
        assert [(r.key["day"], r.clicks, r.adds) for r in rows] == [
            ("2026-01-31", 5, 1), ("2026-02-01", 8, 1), ("2026-02-20", 3, 0),
            ("2026-02-28", 5, 0), ("2026-03-01", 0, 2)]
        # New traffic keeps the backfilled rows and the per-day ones in step.
        await store.record([Click(id="click00000001", merchant_id="m1", product_id=7, ts=1.0,
                                  day="2026-02-28", platform="jd", source="ua", visitor="v",
                                  ip_hash="h", channel="live")], [])
        months = await database.fetch(
            "SELECT merchant_id, month, product_id, platform, channel, clicks FROM "
            "monthly_rollups WHERE platform = 'jd' AND channel = 'live'")
        assert months == [("m1", "2026-02", 7, "jd", "live", 1)]
        await _assert_coarser_rollups_agree(database)
    finally:
        await store.close()
