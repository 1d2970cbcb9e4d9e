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


# --- every counter table, every outcome: figures the test works out from its own clicks ---

_DAYS = ("2026-09-30", "2026-10-01", "2026-10-15", "2026-10-31", "2026-11-01")
_OUTCOMES = ("redirect", "landing", "guide")


def _mixed_clicks(merchant: str, salt: int) -> list[Click]:
    """Clicks over two products, three platforms, two channels, five days in three months,
    every outcome, some bots; the same for both merchants but for how many (``salt``)."""
    clicks = []
    for n in range(60 + salt):
        clicks.append(Click(
            id=f"{merchant}{n:014d}", merchant_id=merchant, product_id=1 + n % 2,
            ts=1.0 + n, day=_DAYS[n % 5], platform=("wechat", "taobao", "douyin")[n % 3],
            source="ua", visitor=f"{merchant}v{n % 7}", ip_hash="h", bot=n % 11 == 0,
            channel=(None, "live")[n % 2 if n % 4 else 0], outcome=_OUTCOMES[n % 3]))
    return clicks


def _expected(clicks: list[Click], by: str, *, from_day: str, to_day: str,
              product_id: int | None = None, platform: str | None = None,
              ) -> dict[str, tuple[int, ...]]:
    """The figures rollups must show, counted here from the clicks: a person's click adds
    to clicks and its outcome's counter (a redirect is a storefront open too), a bot's only
    to bot_clicks."""
    rows: dict[str, list[int]] = {}
    for c in clicks:
        if not from_day <= c.day <= to_day or product_id not in (None, c.product_id) \
                or platform not in (None, c.platform):
            continue
        key = {"platform": c.platform, "product": str(c.product_id), "day": c.day,
               "channel": c.channel or "", "total": ""}[by]
        row = rows.setdefault(key, [0] * 6)
        if c.bot:
            row[1] += 1
            continue
        row[0] += 1
        row[2 + _OUTCOMES.index(c.outcome)] += 1
        row[5] += c.outcome == "redirect"
    return {key: tuple(row) for key, row in rows.items()}


@pytest.mark.parametrize("engine_name", ["sqlite", "postgres"])
async def test_every_outcome_counts_in_every_table(tmp_path: Path, engine_name: str) -> None:
    # Two merchants' clicks in two batches (the second adds to rows the first made) must
    # read back, through every table a report can pick, as the counts worked out here.
    async with _engine(engine_name, tmp_path) as store:
        clicks: dict[str, list[Click]] = {}
        products: dict[str, tuple[int, int]] = {}
        for merchant, salt in (("m1", 0), ("m2", 13)):
            await store.create_merchant(Merchant(merchant, merchant))
            tea, cup = [(await store.create_product(
                merchant, code=f"{merchant}{title}", title=title, targets={}, image_url=None,
                price=None)).id for title in ("tea", "cup")]
            products[merchant] = (tea, cup)
            clicks[merchant] = [c._replace(product_id=(tea, cup)[c.product_id - 1])
                                for c in _mixed_clicks(merchant, salt)]
        await store.record(clicks["m1"][:25] + clicks["m2"][:40], [])
        await store.record(clicks["m1"][25:] + clicks["m2"][40:], [])
        for merchant, (tea, cup) in products.items():
            for from_day, to_day in (("2026-10-15", "2026-10-15"),
                                     ("2026-09-01", "2026-11-30"),
                                     ("2026-09-30", "2026-11-01")):
                for by in ("platform", "product", "day", "channel", "total"):
                    for product_id, platform in ((None, None), (cup, None), (None, "taobao"),
                                                 (tea, "wechat")):
                        rows = await store.stats(
                            merchant, from_day=from_day, to_day=to_day,
                            by=by,  # type: ignore[arg-type]
                            product_id=product_id, platform=platform)
                        got = {str(next(iter(r.key.values()), "")): (
                            r.clicks, r.bot_clicks, r.redirects, r.landings, r.guides,
                            r.storefront_opens) for r in rows}
                        expected = _expected(clicks[merchant], by, from_day=from_day,
                                             to_day=to_day, product_id=product_id,
                                             platform=platform)
                        assert {k: v for k, v in got.items() if any(v)} == expected, (
                            merchant, by, from_day, to_day, product_id, platform)
