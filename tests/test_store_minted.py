"""Minted links in storage, on both engines: scoped by merchant, claimed by one gateway at a
time, and heard by every gateway when they change."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from gateway.store import Merchant, MintedLink, Store
from gateway.store.postgres import PostgresStore

from . import pg
from .test_store import Database, database, store  # noqa: F401 -- the engines' fixtures
from .wait import until

URL = "https://wxaurl.cn/AbC"


def _link(merchant: str, code: str, kind: str = "url_link", **fields: object) -> MintedLink:
    values: dict[str, object] = {"fingerprint": "wx|p|q", "value": URL, "expires_at": 2000.0,
                                 "minted_at": 100.0, "due_at": 1500.0}
    values.update(fields)
    return MintedLink(merchant, code, kind, **values)  # type: ignore[arg-type]


async def _merchants(store: Store) -> None:  # noqa: F811
    """Two merchants and their share codes (a merchant's links are minted for its own)."""
    await store.create_merchant(Merchant("m1", "One"))
    await store.create_merchant(Merchant("m2", "Two"))
    for merchant, code in (("m1", "tea"), ("m2", "cake"), ("m2", "pie")):
        await store.create_product(merchant, code=code, title=code, targets={}, image_url=None,
                                   price=None)


async def test_minted_links_are_scoped_and_expire(store: Store) -> None:  # noqa: F811
    await _merchants(store)
    mine = [_link("m1", "tea"), _link("m1", "tea", "scheme", value="weixin://dl/business/?t=x"),
            _link("m1", "tea", "wxacode", value="tok", image=b"\xff\xd8jpeg", expires_at=0.0)]
    for row in mine:
        await store.put_minted(row)
    await store.put_minted(_link("m2", "cake", value="https://wxaurl.cn/Other"))
    await store.put_minted(_link("m2", "pie", value=None, error="45009: quota"))
    assert await store.minted("m1", "tea") == sorted(mine, key=lambda m: m.kind)
    assert await store.minted("m2", "tea") == []  # another merchant's code is not there
    assert await store.minted_values(["tea", "cake", "pie", "none"], now=1000.0) == {
        "tea": {"url_link": URL, "scheme": "weixin://dl/business/?t=x", "wxacode": "tok"},
        "cake": {"url_link": "https://wxaurl.cn/Other"}}
    # From its expiry on a link is no longer served; the code never expires.
    for now in (2000.0, 2001.0):
        assert await store.minted_values(["tea"], now=now) == {"tea": {"wxacode": "tok"}}
    assert await store.minted_image("tea") == ("tok", b"\xff\xd8jpeg")
    assert await store.minted_image("cake") is None
    # Replacing keeps one row per code and kind, every field as minted again (a changed
    # target's fingerprint too, or the link would look stale and be minted on every pass).
    again = replace(mine[0], fingerprint="wx|p2|q", value="https://wxaurl.cn/New",
                    expires_at=3000.0, minted_at=200.0, attempts=1, due_at=2500.0)
    await store.put_minted(again)
    assert (await store.minted_values(["tea"], now=0.0))["tea"]["url_link"] == \
        "https://wxaurl.cn/New"
    assert await store.minted("m1", "tea") == sorted([again, *mine[1:]], key=lambda m: m.kind)
    await store.forget_minted("m2", "tea")  # not m2's: nothing goes
    assert len(await store.minted("m1", "tea")) == 3
    await store.forget_minted("m1", "tea")
    assert await store.minted("m1", "tea") == []
    assert await store.minted("m2", "cake") != []


async def test_due_rows_are_claimed_once(store: Store) -> None:  # noqa: F811
    await _merchants(store)
    await store.put_minted(_link("m1", "tea", due_at=10.0))
    await store.put_minted(_link("m2", "cake", "wxacode", value="tok", image=b"\xff\xd8jpeg",
                                 due_at=20.0))
    await store.put_minted(_link("m2", "pie", due_at=99.0))
    first, second = await asyncio.gather(store.claim_due_mints(50.0, 350.0, 10),
                                         store.claim_due_mints(50.0, 350.0, 10))
    claimed = sorted([*first, *second], key=lambda m: m.code)
    # Images stay in the database: a renewal makes a new one.
    assert [(m.code, m.merchant_id, m.due_at, m.image) for m in claimed] == [
        ("cake", "m2", 350.0, None), ("tea", "m1", 350.0, None)]
    assert await store.minted_image("cake") == ("tok", b"\xff\xd8jpeg")
    assert await store.claim_due_mints(60.0, 360.0, 10) == []  # leased, and pie not due
    # The longest overdue first.
    assert [m.code for m in await store.claim_due_mints(400.0, 700.0, 1)] == ["pie"]


async def test_every_gateway_hears_a_minted_link(database: Database) -> None:  # noqa: F811
    writer, listener = await database.open(), await database.open()
    heard: list[str | None] = []
    watcher = asyncio.create_task(listener.watch_links(heard.append))
    try:
        await writer.create_merchant(Merchant("m1", "One"))
        if database.engine != "sqlite":  # PostgreSQL: until the listener is listening
            await until(lambda: None in heard, what="the listener listening")
        # The product's own change is heard first; then only the minted link can say "tea".
        await writer.create_product("m1", code="tea", title="tea", targets={}, image_url=None,
                                    price=None)
        await until(lambda: "tea" in heard, what="the new product heard")
        heard.clear()
        await writer.put_minted(_link("m1", "tea"))
        await until(lambda: "tea" in heard, what="the minted link heard")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await writer.close()
        await listener.close()


async def test_postgres_claim_skips_a_row_another_gateway_holds() -> None:
    """Two gateways claiming at once take different rows: one holding a row (mid-claim)
    makes the other skip it, not wait for it and then take it again."""
    url = pg.postgres_url()
    async with pg.fresh_schema(url) as schema:
        store = await PostgresStore.open(url, schema=schema)
        other = await pg.connect(url, schema)
        try:
            await _merchants(store)
            await store.put_minted(_link("m1", "tea", due_at=10.0))
            await store.put_minted(_link("m2", "cake", due_at=20.0))
            async with other.transaction():
                await other.execute("SELECT 1 FROM minted_links WHERE code = 'tea' FOR UPDATE")
                claimed = await asyncio.wait_for(store.claim_due_mints(50.0, 350.0, 10),
                                                 timeout=30)
                assert [m.code for m in claimed] == ["cake"]
        finally:
            await other.close()
            await store.close()
