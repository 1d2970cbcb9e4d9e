"""Taking a forgotten visitor out of the visitor sketches (engine-neutral).

``linkloop privacy forget`` deletes a visitor's raw rows; their hash also sits in every
sketch cell (sketch.py) their human clicks touched. For each such cell:

- an **exact** cell holds the 64-bit hashes themselves: the visitor's is dropped
  (``cleaned``);
- a **HyperLogLog** cell can't drop one visitor (a register is the maximum over many), but
  it can be rebuilt from the raw clicks still stored, when they are all of the cell's
  clicks: the human raw clicks in its period add up to the cell's ``clicks`` in
  ``rollups``, i.e. none was pruned by retention or left behind by an export
  (``rebuilt``). Otherwise it is ``left`` as it is: it still counts the visitor, and holds
  no more of them than a register's maximum rank, which can't be turned back into the
  cookie id.

Both engines call these in the transaction that deletes the raw rows, before the delete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import SketchKey
from .rollup import SKETCH_KINDS
from .sketch import EXACT, add_hashes, visitor_hash

__all__ = ["VISITOR_CLICKS", "CellQueries", "cell_queries", "cleaned_sketch", "hash_bytes",
           "needs_raw",
           "visitor_cells", "with_sketches"]

#: (SQL of the cell's human raw clicks per visitor, SQL of the cell's rollup clicks, args).
CellQueries = tuple[str, str, list[Any]]


def cell_queries(key: SketchKey, placeholder: Callable[[int], str]) -> CellQueries:
    """The two queries that say what the raw clicks of a sketch cell are and whether they
    are all of its clicks; ``placeholder(n)`` is the engine's n-th (1-based) parameter."""
    merchant, kind, period, product, platform, channel = key
    keeps_product, keeps_platform, grain = SKETCH_KINDS[kind]
    first, last = (period, period) if grain == "day" else (f"{period}-01", f"{period}-31")
    conditions = ["merchant_id = {}", "day >= {}", "day <= {}"]
    args: list[Any] = [merchant, first, last]
    if keeps_product:
        conditions.append("product_id = {}")
        args.append(product)
    if keeps_platform:
        conditions.append("platform = {}")
        args.append(platform)
    where = " AND ".join(c.format(placeholder(n)) for n, c in enumerate(conditions, 1))
    channel_at = placeholder(len(args) + 1)
    args.append(channel)
    raw = (f"SELECT visitor, count(*) FROM clicks WHERE {where} AND NOT bot "
           f"AND COALESCE(channel, '') = {channel_at} GROUP BY visitor")
    rolled = (f"SELECT COALESCE(SUM(clicks), 0) FROM rollups WHERE {where} "
              f"AND channel = {channel_at}")
    return raw, rolled, args


def cleaned_sketch(sketch: bytes, visitor: str, raw: Iterable[tuple[str, int]] | None,
                   rolled: int | None) -> tuple[str, bytes | None]:
    """What becomes of one cell: ("cleaned" | "rebuilt" | "left" | "absent": an exact cell
    without the visitor, a byte search's false match), its new sketch or None.

    ``raw`` (visitor, human clicks) and ``rolled`` (the cell's rollup clicks) are needed
    only for a HyperLogLog cell (pass None for an exact one: see ``needs_raw``)."""
    if sketch[:1] == EXACT:
        gone = visitor_hash(visitor)
        words = [w for w in _exact_hashes(sketch) if w != gone]
        return ("cleaned", add_hashes(None, words)) if len(words) < len(sketch) // 8 else (
            "absent", None)
    assert raw is not None and rolled is not None
    counts = dict(raw)
    if sum(counts.values()) != rolled:
        return "left", None
    return "rebuilt", add_hashes(None, {visitor_hash(v) for v in counts if v != visitor})


def needs_raw(sketch: bytes) -> bool:
    """Whether ``cleaned_sketch`` needs the cell's raw clicks (a HyperLogLog cell)."""
    return sketch[:1] != EXACT


def _exact_hashes(sketch: bytes) -> list[int]:
    return [int.from_bytes(sketch[at:at + 8], "little") for at in range(1, len(sketch), 8)]


#: The visitor's human clicks' cells: SELECT this, then ``visitor_cells`` on the rows.
VISITOR_CLICKS = ("SELECT DISTINCT merchant_id, day, product_id, platform, "
                  "COALESCE(channel, '') FROM clicks WHERE visitor = {} AND NOT bot")


def hash_bytes(visitor: str) -> bytes:
    """The visitor's hash as an exact sketch stores it: found in the sketch's bytes by the
    database (``instr``, ``position``), it picks the exact cells of days whose raw clicks
    are gone (pruned), which ``visitor_cells`` can't name."""
    return visitor_hash(visitor).to_bytes(8, "little")


def visitor_cells(rows: Iterable[tuple[str, str, int, str, str]]) -> list[SketchKey]:
    """Every sketch cell holding the visitor: each kind's cell of each of their human
    clicks (as rollup.sketch_cells files them)."""
    cells: dict[SketchKey, None] = {}
    for merchant, day, product, platform, channel in rows:
        for kind, (keeps_product, keeps_platform, grain) in SKETCH_KINDS.items():
            cells[(merchant, kind, day if grain == "day" else day[:7],
                   product if keeps_product else 0, platform if keeps_platform else "",
                   channel)] = None
    return list(cells)


def with_sketches(deleted: dict[str, dict[str, int]], outcomes: Iterable[tuple[str, str]],
                  ) -> dict[str, dict[str, int]]:
    """``deleted`` (per merchant, raw rows deleted) with how many of the merchant's sketch
    cells were cleaned, rebuilt and left (``outcomes``: (merchant, outcome) pairs)."""
    for merchant, outcome in outcomes:
        if outcome == "absent":
            continue
        mine = deleted.setdefault(merchant, {"clicks": 0, "events": 0, "visitors": 0})
        mine[f"sketches_{outcome}"] = mine.get(f"sketches_{outcome}", 0) + 1
    for mine in deleted.values():
        for outcome in ("cleaned", "rebuilt", "left"):
            mine.setdefault(f"sketches_{outcome}", 0)
    return deleted
