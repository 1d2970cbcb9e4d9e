"""What both engines share when raw rows go (gateway/retention.py says when and why)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .base import RollupKey
from .rollup import RollupDelta

__all__ = ["deltas_of", "tally_forgotten"]


def deltas_of(rows: Sequence[tuple[RollupKey, tuple[int, ...]]]) -> dict[RollupKey, RollupDelta]:
    """Exported per-day rollup rows (counts in ``COUNTERS`` order) as increments."""
    deltas: dict[RollupKey, RollupDelta] = {}
    for key, counts in rows:
        delta = deltas.setdefault(key, RollupDelta())
        delta.counts = [a + b for a, b in zip(delta.counts, counts, strict=True)]
    return deltas


def tally_forgotten(clicks: Iterable[str], events: Iterable[str],
                    visitors: Iterable[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """Per merchant, how many of a visitor's rows were deleted: ``clicks`` and ``events``
    name the merchant of each deleted row, ``visitors`` is (merchant, rows) pairs."""
    counts: dict[str, dict[str, int]] = {}
    for kind, merchants in (("clicks", Counter(clicks)), ("events", Counter(events)),
                            ("visitors", Counter(dict(visitors)))):
        for merchant, count in merchants.items():
            if count:
                counts.setdefault(merchant, {"clicks": 0, "events": 0, "visitors": 0})[kind] = (
                    count)
    return counts
