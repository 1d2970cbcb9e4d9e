"""What the click writer sets aside, and folds in bulk: visitors and counts.

A batch used to rewrite, for every product it touched, a visitor sketch cell of each kind
(sketch.py) and a row of each of the five counter tables (rollup.py). Clicks spread over
many products touch a cell and five rows or more per click in every batch, so rewriting
them was most of the writer's work. Instead, each batch appends to two tables with no
index (the cheapest insert there is), in the transaction that stores its clicks:

- ``pending_visitors``: its human clicks' visitor hashes, one row per click and finest
  cell;
- ``pending_counts``: its per-day counter increments, one row per ``rollups`` key
  (``rollup.delta_rows``), events and their moves to a late click included.

The writer folds both once ``storage.sketch_fold_visitors`` rows have gathered in either,
or a minute after its last fold (``FoldSchedule``), in one transaction (on SQLite in parts,
oldest first, once one held the write lock too long, as batches are: turns.py): a cell or
a counter row is then rewritten once for many clicks, the counters with SQL
(``rollup.fold_statement``). Both engines do this (sqlite.py, postgres.py); on PostgreSQL
each gateway counts the rows it set aside itself, and whichever folds takes every pending
row (a fold is a sum and a set union, so which writer folds what never matters).

Reports don't wait for the fold, and a fold changes no figure:

- counters: the stats query adds the merchant's pending increments of its range to the
  tables' sums (sql.py);
- visitors: the database hands a report each cell's pending hashes, grouped and
  concatenated (``pending_cells_query``); ``with_pending`` gives them to the merge as one
  exact sketch beside the cell's stored one, which is what the fold's result counts as: a
  union, or the registers raised by those hashes. The one difference is a cell whose exact
  sketch the fold would turn into registers (past EXACT_MAX): there an empty sparse sketch
  beside it makes the merge estimate, as it will after the fold.

A forget and an export fold first (both read the tables as the fold leaves them).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .base import COUNTERS, Click
from .rollup import KEY_COLUMNS, FinestKey, SketchKey, cells_of, finest_cells
from .sketch import EXACT, EXACT_MAX, SPARSE
from .sql import Params, SketchPlan

__all__ = ["FOLD_AFTER_SECONDS", "HEX_CONCAT", "PENDING_COLUMNS", "PENDING_COUNT_COLUMNS",
           "FoldSchedule", "aside_rows", "folded_cells", "pending_cells_query", "with_pending"]

#: Seconds after a writer's last fold (or its start) when its next batch folds whatever is
#: pending, however few: at low traffic the pending rows stay few, so what a report adds
#: to the tables stays small.
FOLD_AFTER_SECONDS = 60.0

@dataclass
class FoldSchedule:
    """When a writer folds what it set aside: once ``every`` rows are pending in either
    table, or FOLD_AFTER_SECONDS after its last fold (or its start) if any are. Each engine
    keeps ``pending`` up to date as it sees it (the larger table's rows)."""

    every: int
    pending: int = 0
    folded_at: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        return self.pending >= self.every or (
            self.pending > 0 and time.monotonic() - self.folded_at >= FOLD_AFTER_SECONDS)

    def folding(self) -> None:
        """A fold begins: the minute runs from now."""
        self.folded_at = time.monotonic()


#: pending_visitors' columns: a finest cell (rollup.FinestKey), then ``visitor``, the
#: visitor's hash in 8 little-endian bytes (as an exact sketch stores it).
PENDING_COLUMNS = "merchant_id, day, product_id, platform, channel, visitor"

PendingRow = tuple[str, str, int, str, str, bytes]

#: pending_counts' columns: a ``rollups`` key, then the counters (``rollup.delta_rows``'
#: order; ``rollup.fold_statement`` reads them by these names).
PENDING_COUNT_COLUMNS = ", ".join((*KEY_COLUMNS["rollups"], *COUNTERS))


def aside_rows(clicks: Iterable[Click]) -> list[tuple[Any, ...]]:
    """The pending_visitors rows of a batch's new clicks: each human click's visitor, once
    per finest cell."""
    return [(*key, visitor.to_bytes(8, "little"))
            for key, visitors in finest_cells(clicks).items() for visitor in visitors]


def _hash(visitor: bytes) -> int:
    return int.from_bytes(visitor, "little")


def folded_cells(rows: Iterable[PendingRow]) -> dict[SketchKey, set[int]]:
    """The hashes pending rows add to each cell of every kind (what a fold writes)."""
    finest: dict[FinestKey, set[int]] = {}
    for merchant_id, day, product_id, platform, channel, visitor in rows:
        finest.setdefault((merchant_id, day, product_id, platform, channel), set()).add(
            _hash(visitor))
    return cells_of(finest)


#: The hex of a group's hashes, concatenated, in each engine's SQL.
HEX_CONCAT = {"sqlite": "group_concat(hex(visitor), '')",
              "postgres": "string_agg(encode(visitor, 'hex'), '')"}


def pending_cells_query(plan: SketchPlan, merchant_id: str, *, mark: str,
                        engine: Literal["sqlite", "postgres"]) -> tuple[str, list[Any]]:
    """(group, the cell's key, pending visitors, their hashes in hex) of each cell the
    report reads that has visitors pending: the SQL groups and concatenates them, so
    Python's work is per cell, not per visitor. ``mark``: the driver's placeholder, as
    for sql.py's queries."""
    param = Params(mark)
    selects: list[str] = []
    for grain, lo, hi in plan.parts:
        period = "day" if grain == "day" else "substr(day, 1, 7)"
        product = "product_id" if plan.keep_product else "0"
        by_platform = "platform" if plan.keep_platform else "''"
        group = {"day": period, "product": product, "platform": by_platform,
                 "channel": "channel"}.get(plan.by, "''")
        select = (f"SELECT {group}, merchant_id, CAST({param(plan.base + grain[0])} AS TEXT), "
                  f"{period}, {product}, {by_platform}, channel, count(*), "
                  f"{HEX_CONCAT[engine]} FROM pending_visitors")
        where = (f"merchant_id = {param(merchant_id)} AND {period} >= {param(lo)} "
                 f"AND {period} <= {param(hi)}{plan.filtered(param)}")
        # Grouped by the cell's columns the kind keeps (a constant would name a column).
        kept = [c for c in ("merchant_id", period, product, by_platform, "channel")
                if c not in ("0", "''")]
        selects.append(f"{select} WHERE {where} GROUP BY {', '.join(kept)}")
    return " UNION ALL ".join(selects), param.values


def with_pending(stored: Iterable[Sequence[Any]], pending: Iterable[Sequence[Any]],
                 ) -> Iterator[tuple[Any, bytes]]:
    """(group, sketch) rows for the merge: the stored cells' sketches, and each cell's
    pending hashes as one exact sketch, with an empty sparse sketch wherever the fold would
    turn the cell's exact sketch into registers. ``stored``: ``sketch_query``'s rows
    (group, the cell's six key columns, sketch); ``pending``: ``pending_cells_query``'s."""
    sketches: dict[tuple[Any, ...], bytes] = {}
    for row in stored:
        sketch = bytes(row[7])
        sketches[tuple(row[1:7])] = sketch
        yield row[0], sketch
    for row in pending:
        group, cell, count, hexes = row[0], tuple(row[1:7]), row[7], row[8]
        hashes = bytes.fromhex(hexes)
        yield group, EXACT + hashes
        if _turns_into_registers(sketches.get(cell, EXACT), hashes, count):
            yield group, SPARSE


def _turns_into_registers(sketch: bytes, hashes: bytes, count: int) -> bool:
    """Whether adding these hashes turns the cell's sketch from exact into registers
    (sketch.add_hashes: once it holds more than EXACT_MAX)."""
    if sketch[:1] != EXACT or (len(sketch) - 1) // 8 + count <= EXACT_MAX:
        return False  # registers already, or too few to pass the mark even if all new
    return len(set(array("Q", sketch[1:])) | set(array("Q", hashes))) > EXACT_MAX
