"""The storage contract, run against every engine on real files and servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import Click, CodeTaken, Event, Merchant, MerchantExists, Store
from gateway.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    engine = await SQLiteStore.open(tmp_path / "store.db")
    yield engine
    await engine.close()


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
                              "bot_clicks": 1, "storefront_opens": 1, "entries": 1, "adds": 1}
    assert rows["web"]["clicks"] == 1 and rows["web"]["unique_visitors"] == 1


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


async def test_migrations_apply_once_and_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    first = await SQLiteStore.open(path)
    await first.create_merchant(Merchant("m1", "One"))
    await first.close()
    second = await SQLiteStore.open(path)
    assert await second.get_merchant("m1") is not None
    await second.close()
