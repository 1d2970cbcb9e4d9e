"""Visitors set aside: the click writer folds visitors into the sketches in bulk.

A visitor sketch cell (sketch.py) is rewritten whole whenever visitors are added to it.
Clicks spread over many products touch a cell or more per click in every batch, so
rewriting the cells was most of the writer's work. Instead, each batch appends its
human clicks' visitor hashes to ``pending_visitors`` (one row per click and finest
cell, no index), and once ``storage.sketch_fold_visitors`` have gathered the writer folds
them all into the sketches in one transaction: a cell is then rewritten once for many
clicks. Both engines do this (gateway/store/sqlite.py, gateway/store/postgres.py); on
PostgreSQL each gateway counts the rows it set aside itself, and whichever folds takes
every pending row (a fold is a set union, so which writer folds what never matters).

Reports don't wait for the fold. ``with_pending`` adds the pending visitors of each cell
a report reads to that cell's sketch exactly as the fold will (``add_hashes``), so a
figure is the same before and after a fold, exact and estimated alike. A forget or an
export folds first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .base import Click
from .rollup import FinestKey, SketchKey, cells_of, finest_cells
from .sketch import EXACT, add_hashes
from .sql import SketchPlan, _Params

__all__ = ["PENDING_COLUMNS", "aside_rows", "folded_cells", "pending_query", "with_pending"]

#: pending_visitors' columns: a finest cell (rollup.FinestKey), then ``visitor``, the
#: visitor's hash as an exact sketch of one (its 8 bytes are found by ``_hash``).
PENDING_COLUMNS = "merchant_id, day, product_id, platform, channel, visitor"

PendingRow = tuple[str, str, int, str, str, bytes]


def aside_rows(clicks: Iterable[Click]) -> list[tuple[Any, ...]]:
    """The pending_visitors rows of a batch's new clicks: each human click's visitor, once
    per finest cell."""
    return [(*key, EXACT + visitor.to_bytes(8, "little"))
            for key, visitors in finest_cells(clicks).items() for visitor in visitors]


def _hash(visitor: bytes) -> int:
    return int.from_bytes(visitor[1:], "little")


def folded_cells(rows: Iterable[PendingRow]) -> dict[SketchKey, set[int]]:
    """The hashes pending rows add to each cell of every kind (what a fold writes)."""
    finest: dict[FinestKey, set[int]] = {}
    for merchant_id, day, product_id, platform, channel, visitor in rows:
        finest.setdefault((merchant_id, day, product_id, platform, channel), set()).add(
            _hash(visitor))
    return cells_of(finest)


def pending_query(merchant_id: str, *, from_day: str, to_day: str, product_id: int | None,
                  platform: str | None, channel: str | None, mark: str,
                  ) -> tuple[str, list[Any]]:
    """The merchant's pending rows a report over [from_day, to_day] with these filters
    reads; ``mark`` is the driver's placeholder, as for sql.py's queries (``?``, ``${n}``)."""
    param = _Params(mark)
    where = (f"merchant_id = {param(merchant_id)} AND day >= {param(from_day)} "
             f"AND day <= {param(to_day)}")
    for name, value in {"product_id": product_id, "platform": platform,
                        "channel": channel}.items():
        if value is not None:
            where += f" AND {name} = {param(value)}"
    return f"SELECT {PENDING_COLUMNS} FROM pending_visitors WHERE {where}", param.values


def with_pending(plan: SketchPlan, stored: Iterable[Sequence[Any]],
                 pending: Iterable[PendingRow]) -> Iterator[tuple[Any, bytes]]:
    """(group, sketch) of each cell the report reads, its pending visitors added as the
    fold will add them. ``stored``: ``sketch_query(..., with_cell=True)``'s rows (group,
    the six columns of the cell's key, sketch); ``pending``: ``pending_query``'s."""
    added: dict[SketchKey, set[int]] = {}
    for merchant_id, day, product_id, platform, channel, visitor in pending:
        cell = plan.cell(merchant_id, day, product_id, platform, channel)
        if cell is not None:
            added.setdefault(cell, set()).add(_hash(visitor))
    for row in stored:
        group, cell, sketch = row[0], tuple(row[1:7]), bytes(row[7])
        hashes = added.pop(cell, None)
        yield group, sketch if hashes is None else add_hashes(sketch, hashes)
    for cell, hashes in added.items():
        yield plan.group(cell), add_hashes(None, hashes)

