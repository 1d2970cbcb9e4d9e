"""What the merchant console asks of storage, on both engines: sales windows and states,
searching a merchant's products, all-or-nothing bulk creation, named channels, merchants'
domains and password resets. Two merchants in every test."""

from __future__ import annotations

import pytest

from gateway.store import (
    Channel,
    ChannelExists,
    CodeTaken,
    Merchant,
    NewProduct,
    Store,
    StoreError,
    User,
)
from gateway.store.base import PRODUCT_CHANGES

from . import test_store
from .test_store import Database

# The engines' fixtures (a SQLite file, a fresh PostgreSQL schema), shared with test_store.
database = test_store.database
store = test_store.store

TARGETS = {"taobao": {"item_id": "123456"}}


async def _merchants(store: Store) -> None:
    await store.create_merchant(Merchant("m1", "One", ("one.example.com",)))
    await store.create_merchant(Merchant("m2", "Two", ("two.example.com",)))


async def test_windows_are_stored_and_states_follow_the_clock(store: Store) -> None:
    await _merchants(store)
    made = await store.create_product("m1", code="window01", title="Tea", targets=TARGETS,
                                      image_url=None, price=None, valid_from=1000.0,
                                      valid_until=2000.0)
    read = await store.get_product("m1", made.id)
    assert read is not None and (read.valid_from, read.valid_until) == (1000.0, 2000.0)
    assert [read.state(t) for t in (999.0, 1000.0, 1999.9, 2000.0)] == [
        "scheduled", "live", "live", "ended"]
    linked = await store.link("window01")
    assert linked is not None and linked.valid_until == 2000.0
    changed = await store.update_product("m1", made.id, {"valid_from": None,
                                                         "valid_until": 3000.0})
    assert changed is not None and (changed.valid_from, changed.valid_until) == (None, 3000.0)
    plain = await store.create_product("m1", code="plain001", title="Cup", targets=TARGETS,
                                       image_url=None, price=None)
    assert (plain.valid_from, plain.valid_until) == (None, None)
    assert plain.state(0.0) == "live"


async def test_a_new_product_is_stored_and_answered_with_every_field(store: Store) -> None:
    # What the console shows after "create" is what was stored: image, price, window.
    await _merchants(store)
    made = await store.create_product("m1", code="made0001", title="明前龙井", targets=TARGETS,
                                      image_url="https://img.example.com/t.png",
                                      price="168.00", valid_from=1000.0, valid_until=2000.0)
    assert made == await store.get_product("m1", made.id)
    assert (made.merchant_id, made.code, made.title, made.targets, made.image_url, made.price,
            made.valid_from, made.valid_until) == (
        "m1", "made0001", "明前龙井", TARGETS, "https://img.example.com/t.png", "168.00",
        1000.0, 2000.0)
    assert made.created_at > 0 and made.updated_at == made.created_at
    assert await store.get_product("m2", made.id) is None


async def test_every_field_of_a_product_changes_at_once(store: Store) -> None:
    # The console's edit form sends them all: title, image, price, storefronts, state and
    # the sales window, in one change, and the other merchant's product keeps its own.
    await _merchants(store)
    made = await store.create_product("m1", code="edit0001", title="Tea", targets=TARGETS,
                                      image_url=None, price=None)
    theirs = await store.create_product("m2", code="edit0002", title="Theirs", targets=TARGETS,
                                        image_url=None, price="1.00")
    changes = {"title": "明前龙井", "image_url": "https://img.example.com/t.png",
               "price": "168.00", "targets": {"jd": {"sku": "100000000001"}},
               "status": "retired", "valid_from": 1000.0, "valid_until": 2000.0}
    assert set(changes) == PRODUCT_CHANGES
    changed = await store.update_product("m1", made.id, changes)
    read = await store.get_product("m1", made.id)
    assert changed == read and read is not None
    assert {name: getattr(read, name) for name in changes} == changes
    assert await store.get_product("m2", theirs.id) == theirs


async def test_listing_searches_title_and_code_and_filters_by_state(store: Store) -> None:
    await _merchants(store)
    now = 5000.0
    specs = [("longjing", "明前龙井 250g", None, None), ("cupset01", "Tea Cup Set", None, 4000.0),
             ("soon0001", "新品 Tea", 6000.0, None), ("gone0001", "Old tea", None, None),
             ("per_cent", "100% 纯茶", None, None), ("bslash01", "普洱\\熟茶", None, None),
             ("mug00001", "Mug", 1000.0, 9000.0), ("bowl0001", "Bowl", 1000.0, 4000.0)]
    ids = {}
    for code, title, start, end in specs:
        made = await store.create_product("m1", code=code, title=title, targets=TARGETS,
                                          image_url=None, price=None, valid_from=start,
                                          valid_until=end)
        ids[code] = made.id
    await store.update_product("m1", ids["gone0001"], {"status": "retired"})
    # The other merchant's tea never shows up in m1's search, nor m1's in theirs.
    await store.create_product("m2", code="m2tea001", title="Tea too", targets=TARGETS,
                               image_url=None, price=None)

    async def codes(**filters: object) -> list[str]:
        found = await store.list_products("m1", limit=50, now=now, **filters)  # type: ignore[arg-type]
        return [p.code for p in found]

    assert await codes(search="tea") == ["cupset01", "soon0001", "gone0001"]
    assert await codes(search="龙井") == ["longjing"]
    assert await codes(search="LONGJ") == ["longjing"]  # by code, any case
    assert await codes(search="%") == ["per_cent"]  # a literal %, not "anything"
    assert await codes(search="p_r") == []  # a literal _, not "any one character"
    assert await codes(search="_") == ["per_cent"]
    assert await codes(search="\\") == ["bslash01"]  # a literal \, not the escape
    assert await codes(search="\\%") == []
    # Windows with both ends: open now (live), or over (ended, though it had a start).
    assert await codes(state="live") == ["longjing", "per_cent", "bslash01", "mug00001"]
    assert await codes(state="ended") == ["cupset01", "bowl0001"]
    assert await codes(state="scheduled") == ["soon0001"]
    assert await codes(state="retired") == ["gone0001"]
    assert await codes(search="tea", state="live") == []
    page = await store.list_products("m1", limit=2, after_id=ids["longjing"], search="t",
                                     now=now)
    assert [p.code for p in page] == ["cupset01", "soon0001"]
    assert [p.code for p in await store.list_products("m2", limit=50, search="tea")] == [
        "m2tea001"]


async def test_bulk_creation_is_all_or_nothing(store: Store) -> None:
    await _merchants(store)
    await store.create_product("m2", code="taken001", title="Theirs", targets=TARGETS,
                               image_url=None, price=None)
    batch = [NewProduct(f"bulk{i:04d}", f"Tea {i}", TARGETS, None, "9.90") for i in range(3)]
    with pytest.raises(CodeTaken) as refused:
        await store.create_products("m1", [*batch, NewProduct("taken001", "Mine", TARGETS)])
    assert str(refused.value) == "taken001"
    assert await store.list_products("m1", limit=10) == []
    for product in batch:
        assert await store.link(product.code) is None
    made = await store.create_products("m1", batch)
    assert [p.code for p in made] == ["bulk0000", "bulk0001", "bulk0002"]
    listed = await store.list_products("m1", limit=10)
    assert [(p.id, p.code, p.price) for p in listed] == [(p.id, p.code, "9.90") for p in made]


async def test_channels_belong_to_their_merchant(store: Store) -> None:
    await _merchants(store)
    live = await store.create_channel(Channel("m1", "spring_live", "春季直播"))
    assert live.created_at > 0
    await store.create_channel(Channel("m1", "poster"))
    await store.create_channel(Channel("m2", "spring_live", "Their stream"))
    with pytest.raises(ChannelExists) as taken:
        await store.create_channel(Channel("m1", "spring_live", "again"))
    assert str(taken.value) == "spring_live"  # the console names the channel taken
    # A merchant that does not exist is that, not a channel name taken.
    with pytest.raises(StoreError, match="nobody") as unknown:
        await store.create_channel(Channel("nobody", "x"))
    assert not isinstance(unknown.value, ChannelExists)
    assert [(c.name, c.label) for c in await store.list_channels("m1")] == [
        ("poster", ""), ("spring_live", "春季直播")]
    assert not await store.delete_channel("m2", "poster")
    assert await store.delete_channel("m1", "spring_live")
    assert not await store.delete_channel("m1", "spring_live")
    assert [c.name for c in await store.list_channels("m1")] == ["poster"]
    assert [c.label for c in await store.list_channels("m2")] == ["Their stream"]


async def test_merchants_are_listed_and_updated_one_at_a_time(store: Store) -> None:
    await _merchants(store)
    assert [m.id for m in await store.list_merchants()] == ["m1", "m2"]
    renamed = await store.update_merchant("m1", name="One Tea")
    assert renamed is not None and renamed.domains == ("one.example.com",)
    moved = await store.update_merchant("m1", domains=["one.example.com", "tea.example.cn"])
    assert moved is not None and (moved.name, moved.domains) == (
        "One Tea", ("one.example.com", "tea.example.cn"))
    cleared = await store.update_merchant("m1", domains=[])
    assert cleared is not None and cleared.domains == ()
    two = await store.get_merchant("m2")
    assert two is not None and (two.name, two.domains) == ("Two", ("two.example.com",))
    assert await store.update_merchant("nobody", name="x") is None


async def test_a_password_reset_lifts_the_lock_and_voids_sessions(store: Store) -> None:
    await _merchants(store)
    for email, merchant in (("anna@example.com", "m1"), ("bob@example.com", "m2")):
        await store.create_user(User(email, merchant, "merchant", "old-hash"))
        for _ in range(3):
            await store.record_login_failure(email, now=1000.0, max_failures=3,
                                             lock_seconds=600)
    before = await store.set_password("anna@example.com", "new-hash", now=1001.0)
    assert before is not None and before.password_hash == "old-hash"
    anna, bob = [await store.get_user(e) for e in ("anna@example.com", "bob@example.com")]
    assert anna is not None and anna.password_hash == "new-hash"
    assert not anna.locked(1002.0) and anna.sessions_after == 1001.0
    assert bob is not None and bob.password_hash == "old-hash" and bob.locked(1002.0)
    assert await store.set_password("nobody@example.com", "x", now=1.0) is None


async def test_the_console_migration_keeps_products(database: Database) -> None:
    engine = await database.open()
    try:
        await engine.create_merchant(Merchant("m1", "One"))
        await engine.create_product("m1", code="before01", title="Tea", targets=TARGETS,
                                    image_url=None, price=None)
    finally:
        await engine.close()
    columns = await database.fetch(
        "SELECT code, valid_from, valid_until FROM products ORDER BY id")
    assert columns == [("before01", None, None)]
