"""Plain-text tables for people at a terminal (``linkloop stats``), CJK-aware.

A Chinese character takes two columns on a terminal; ``str.ljust`` counts it as one, and a
column of product titles like 明前龙井 would come out ragged. ``unicodedata`` knows each
character's East Asian width, which is all a table needs: no dependency for twenty lines.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

__all__ = ["render_table", "text_width"]


def text_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else
               0 if unicodedata.combining(ch) else 1 for ch in text)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value).replace("\n", " ")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 *, numeric_from: int = 1) -> str:
    """``rows`` under ``headers``; columns from ``numeric_from`` on are right-aligned
    (numbers), floats shown as percentages, None as ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([text_width(h), *(text_width(r[i]) for r in cells)])
              for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            pad = " " * (widths[i] - text_width(value))
            parts.append(pad + value if i >= numeric_from else value + pad)
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out) + "\n"
