"""Rollup edge cases the tenant and oracle tests do not reach, on both engines.

Found by mutation testing (tests/README.md): each case here failed to catch a small change
to gateway/store/rollup.py that a user would see in their figures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import Click, Merchant, Store

from .test_tenant_isolation import _engine

DAY = "2026-11-01"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with _engine(request.param, tmp_path) as engine:
        await engine.create_merchant(Merchant("m1", "One"))
        await engine.create_product("m1", code="tea", title="Tea", targets={},
                                    image_url=None, price=None)
        yield engine


def _click(click_id: str, ts: float, *, visitor: str = "v1", channel: str | None = None,
           bot: bool = False) -> Click:
    return Click(id=click_id, merchant_id="m1", product_id=1, ts=ts, day=DAY,
                 platform="wechat", source="ua", visitor=visitor, ip_hash="h", bot=bot,
                 channel=channel)


async def _by_channel(store: Store) -> dict[str, tuple[int, int, int]]:
    rows = await store.stats("m1", from_day=DAY, to_day=DAY, by="channel")
    return {r.key["channel"]: (r.clicks, r.unique_visitors, r.bot_clicks) for r in rows}


async def test_every_bot_click_of_a_batch_counts(store: Store) -> None:
    # Three crawlers' previews in one batch, in one rollup row: three, not one.
    await store.record([_click(f"bot{n:013d}", 1.0 + n, visitor=f"b{n}", bot=True)
                        for n in range(3)], [])
    assert await _by_channel(store) == {"": (0, 0, 3)}


async def test_a_visitor_of_two_channels_is_one_visitor_of_each_and_of_all(store: Store,
                                                                           ) -> None:
    # Unique visitors are distinct within each row, whatever the click ids' order: the
    # visitor who came through both channels is one of each channel's, and one in all.
    later_but_smaller_id = _click("AAAAAAAAAAAAAAAA", 2.0, channel="poster")
    earlier_but_larger_id = _click("zzzzzzzzzzzzzzzz", 1.0, channel="live")
    await store.record([later_but_smaller_id, earlier_but_larger_id], [])
    assert await _by_channel(store) == {"live": (1, 1, 0), "poster": (1, 1, 0)}
    (total,) = await store.stats("m1", from_day=DAY, to_day=DAY, by="total")
    assert (total.clicks, total.unique_visitors) == (2, 1)
