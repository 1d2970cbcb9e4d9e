"""CSV made to be opened in a spreadsheet: no cell a merchant or shopper wrote becomes a formula.

Every CSV the gateway writes (``GET /api/stats?format=csv``, the dashboard's downloads,
``linkloop stats --csv``) goes through ``csv_text``. OWASP's CSV Injection guidance
(owasp.org/www-community/attacks/CSV_Injection) says no cell may begin with ``=``, ``+``,
``-``, ``@``, tab, carriage return or line feed, and that separators and quotes inside a
cell must not let such a character start a new one. So:

* a text cell that begins with one of them (or with spaces before one: spreadsheets skip
  leading blanks; or with its full-width form, which a CJK spreadsheet may take as the
  ASCII one) is prefixed with a single quote, which spreadsheets show as text and hide;
* every text cell is quoted and its quotes doubled (RFC 4180), so a ``,`` or a ``;`` (the
  separator where ``,`` is the decimal mark) inside it starts no new cell;
* numbers the gateway computed stay numbers: written bare, never prefixed, so a figure
  (negative ones included) still sums in the spreadsheet. A number written as text by a
  user (a title ``-5``) is text, and neutralised like any other.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

__all__ = ["FORMULA_TRIGGERS", "csv_text", "spreadsheet_cell"]

#: What a cell must not begin with (OWASP), and the full-width forms of the first four.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n＝＋－＠")

Cell = str | int | float | None


def spreadsheet_cell(value: Cell) -> str | int | float:
    """One cell as written: a number as it is, text that cannot be read as a formula."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value)
    if text and (text[0] in FORMULA_TRIGGERS or text.lstrip()[:1] in FORMULA_TRIGGERS):
        return "'" + text
    return text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """A whole CSV document: the header, then the rows, every cell through ``spreadsheet_cell``."""
    out = io.StringIO()
    # The header is ours (plain names), written as ever; in the rows, every text cell quoted
    # and numbers bare (QUOTE_NONNUMERIC), so a spreadsheet reads the figures as numbers.
    csv.writer(out, lineterminator="\n").writerow([spreadsheet_cell(n) for n in header])
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    for row in rows:
        writer.writerow([spreadsheet_cell(cell) for cell in row])
    return out.getvalue()
