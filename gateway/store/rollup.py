"""Turning a batch of clicks and events into per-day rollup increments (engine-neutral)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass

from .base import Click, Event

__all__ = ["RollupDelta", "RollupKey", "rollup_deltas"]

#: (merchant_id, product_id, day, platform)
RollupKey = tuple[str, int, str, str]

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
        """In ``METRICS`` order."""
        return astuple(self)


def rollup_deltas(
    clicks: Iterable[Click], events: Iterable[Event], first_visits: Mapping[RollupKey, int],
) -> dict[RollupKey, RollupDelta]:
    """Sum a batch into one increment per rollup row.

    A bot's visit counts only in ``bot_clicks``; ``first_visits`` holds how many visitors
    the batch saw for the first time that day, per row. Events with no product (an add
    whose state could not be traced) roll up under product 0.
    """
    deltas: dict[RollupKey, RollupDelta] = {}
    for click in clicks:
        delta = deltas.setdefault(
            (click.merchant_id, click.product_id, click.day, click.platform), RollupDelta())
        if click.bot:
            delta.bot_clicks += 1
        else:
            delta.clicks += 1
    for event in events:
        key = (event.merchant_id, event.product_id or 0, event.day, event.platform)
        delta = deltas.setdefault(key, RollupDelta())
        counter = _EVENT_COUNTER[event.kind]
        setattr(delta, counter, getattr(delta, counter) + 1)
    for key, count in first_visits.items():
        deltas.setdefault(key, RollupDelta()).unique_visitors += count
    return deltas
