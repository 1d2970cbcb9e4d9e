"""Turning a batch of clicks and events into rollup increments (engine-neutral).

Three rollup tables, all bumped in the record transaction from the same deltas, so they
always agree. Each key is (merchant, time, ...) with the platform and channel:

- ``rollups``: per day and product, the figures every other table sums;
- ``monthly_rollups``: per month and product. A year by product reads ~12 rows per
  product, platform and channel instead of ~365;
- ``daily_totals``: per day, every product summed. A year by day, platform or channel
  reads ~365 rows per platform and channel instead of ~365 per product as well.

gateway/store/sql.py picks the table for each stats query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .base import Click, Event, RollupKey

__all__ = ["KEY_COLUMNS", "MonthKey", "RollupDelta", "RollupKey", "TotalKey", "VisitKey",
           "coarser_deltas", "first_visit_channels", "rollup_deltas"]


#: (merchant_id, product_id, month 'YYYY-MM', platform, channel): one row of monthly_rollups.
MonthKey = tuple[str, int, str, str, str]

#: (merchant_id, day, platform, channel): one row of daily_totals (every product summed).
TotalKey = tuple[str, str, str, str]

#: Each rollup table's key columns, in the order of its delta keys above.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "rollups": ("merchant_id", "product_id", "day", "platform", "channel"),
    "monthly_rollups": ("merchant_id", "product_id", "month", "platform", "channel"),
    "daily_totals": ("merchant_id", "day", "platform", "channel"),
}

#: (merchant_id, product_id, day, platform, visitor): one row of daily_visitors.
VisitKey = tuple[str, int, str, str, str]

_EVENT_COUNTER = {"storefront_open": "storefront_opens", "entry": "entries", "add": "adds"}


@dataclass(slots=True)
class RollupDelta:
    clicks: int = 0
    unique_visitors: int = 0
    bot_clicks: int = 0
    storefront_opens: int = 0
    entries: int = 0
    adds: int = 0

    def values(self) -> tuple[int, ...]:
        """In ``METRICS`` order. (Not dataclasses.astuple: it deep-copies, ~30 us a row.)"""
        return (self.clicks, self.unique_visitors, self.bot_clicks, self.storefront_opens,
                self.entries, self.adds)

    def add(self, other: RollupDelta) -> None:
        self.clicks += other.clicks
        self.unique_visitors += other.unique_visitors
        self.bot_clicks += other.bot_clicks
        self.storefront_opens += other.storefront_opens
        self.entries += other.entries
        self.adds += other.adds


def rollup_deltas(
    clicks: Iterable[Click], events: Iterable[Event], first_visits: Mapping[RollupKey, int],
    event_channels: Mapping[tuple[str, str], str] | None = None,
) -> dict[RollupKey, RollupDelta]:
    """Sum a batch into one increment per rollup row.

    A bot's visit counts only in ``bot_clicks``; ``first_visits`` holds how many visitors
    the batch saw for the first time that day, per row. Events with no product (an add
    whose state could not be traced) roll up under product 0. An event takes the channel
    of the click it follows, from ``event_channels`` ((merchant_id, click_id) -> channel),
    and '' when its click is unknown.
    """
    channels = event_channels or {}
    deltas: dict[RollupKey, RollupDelta] = {}
    for click in clicks:
        delta = deltas.setdefault(
            (click.merchant_id, click.product_id, click.day, click.platform,
             click.channel or ""), RollupDelta())
        if click.bot:
            delta.bot_clicks += 1
        else:
            delta.clicks += 1
    for event in events:
        channel = channels.get((event.merchant_id, event.click_id), "") if event.click_id else ""
        key = (event.merchant_id, event.product_id or 0, event.day, event.platform, channel)
        delta = deltas.setdefault(key, RollupDelta())
        counter = _EVENT_COUNTER[event.kind]
        setattr(delta, counter, getattr(delta, counter) + 1)
    for key, count in first_visits.items():
        deltas.setdefault(key, RollupDelta()).unique_visitors += count
    return deltas


def coarser_deltas(
    deltas: Mapping[RollupKey, RollupDelta],
) -> tuple[dict[MonthKey, RollupDelta], dict[TotalKey, RollupDelta]]:
    """The increments of monthly_rollups and daily_totals, summed from the per-day ones.

    Work per rollup row of the batch, not per click. A month's unique visitors are the sum
    of its days' (as a range of days always was): a visitor back on another day counts again.
    """
    months: dict[MonthKey, RollupDelta] = {}
    totals: dict[TotalKey, RollupDelta] = {}
    for (merchant_id, product_id, day, platform, channel), delta in deltas.items():
        months.setdefault((merchant_id, product_id, day[:7], platform, channel),
                          RollupDelta()).add(delta)
        totals.setdefault((merchant_id, day, platform, channel), RollupDelta()).add(delta)
    return months, totals


def first_visit_channels(clicks: Iterable[Click]) -> dict[VisitKey, str]:
    """Each human visitor of the batch, per product, platform and day, with the channel of
    their earliest click: a unique visitor counts once, under the channel that brought them.
    """
    channels: dict[VisitKey, str] = {}
    for click in sorted((c for c in clicks if not c.bot), key=lambda c: (c.ts, c.id)):
        channels.setdefault(
            (click.merchant_id, click.product_id, click.day, click.platform, click.visitor),
            click.channel or "")
    return channels
