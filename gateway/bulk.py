"""Products by the spreadsheet: ``POST /api/products/import`` and the export and template.

Columns are named by the API's JSON paths (``title``, ``price``, ``targets.taobao.item_id``,
``valid_from``...): each row becomes the body ``POST /api/products`` takes and is checked by
the very same code (``catalog.product_errors``), so a row's errors are the API's errors,
every one of them, with the row and the field. An import is all-or-nothing: with any error
nothing is written, and ``dry_run`` writes nothing either way. Slugs are checked against
each other and against the codes in use before anything is written; the rows go in in one
transaction (``Store.create_products``).

Files come as CSV (UTF-8, with or without Excel's BOM, or GB18030: what Excel on a Chinese
Windows writes as "CSV") or XLSX, read by openpyxl, which parses the workbook's XML through
defusedxml when it is installed (it is a dependency of ours). A workbook is a zip: its
declared sizes are checked before anything is unpacked (a zip bomb is refused, not
expanded), and only the first sheet's values are read (formulas as their saved results).

The export writes the same columns (plus ``share_url`` and ``state``, which an import
ignores), CSV through ``spreadsheet.csv_text`` and XLSX with every text cell stored as
text, never as a formula.
"""

from __future__ import annotations

import asyncio
import functools
import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Literal

from adapters import ADAPTERS

from .catalog import WINDOW_FIELDS, moment_text, product_errors, share_url
from .errors import ApiError
from .ids import new_code
from .spreadsheet import csv_text
from .store import CodeTaken, Merchant, NewProduct, Product, Store

__all__ = ["BASE_COLUMNS", "MAX_ROWS", "READ_ONLY_COLUMNS", "XLSX_TYPE", "ImportResult",
           "Kind", "column_docs", "export_file", "export_table", "import_products", "kind_of",
           "read_file", "read_rows", "target_columns", "template_file", "template_table"]

Kind = Literal["csv", "xlsx"]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Most products one file may hold.
MAX_ROWS = 1000
#: Columns every product has, in the order the template lists them.
BASE_COLUMNS = ("title", "price", "image_url", "slug", *WINDOW_FIELDS)
#: Columns the export adds and an import skips: they are answers, not input.
READ_ONLY_COLUMNS = ("share_url", "state")
# A workbook of 1,000 rows unpacks to a few MB; refuse archives that claim more, or that
# compress better than real spreadsheets do (a bomb's tell).
_MAX_UNPACKED = 64 * 1024 * 1024
_MAX_RATIO = 200
_MAX_COLUMNS = 200
_CODE_ATTEMPTS = 5


def target_columns() -> list[str]:
    """``targets.<platform>.<field>`` for every field of every platform with storefronts."""
    return [f"targets.{a.platform}.{name}" for a in ADAPTERS if a.is_target
            for name in a.form_fields]


def _known_columns() -> set[str]:
    return {*BASE_COLUMNS, *target_columns()}


def kind_of(content_type: str, data: bytes) -> Kind | None:
    """Which format a file is in, by its type or, failing that, its first bytes."""
    if content_type == XLSX_TYPE or data[:4] == b"PK\x03\x04":
        return "xlsx"
    if content_type in ("text/csv", "text/plain", "application/csv"):
        return "csv"
    return None


# --- reading ----------------------------------------------------------------------------------
def _bad_file(message: str, code: str = "invalid_file") -> ApiError:
    return ApiError(422, code, message, "file")


def _csv_rows(data: bytes) -> list[list[Any]]:
    import csv

    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover -- gb18030 decodes every byte sequence
        raise _bad_file("the CSV is neither UTF-8 nor GB18030 text")
    try:
        return [list(r) for r in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as exc:
        raise _bad_file(f"the CSV could not be read: {exc}") from None


def _xlsx_rows(data: bytes) -> list[list[Any]]:
    import openpyxl

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        unpacked = sum(m.file_size for m in members)
        packed = sum(m.compress_size for m in members) or 1
    except (zipfile.BadZipFile, OSError, ValueError):
        raise _bad_file("the file is not an XLSX workbook") from None
    if unpacked > _MAX_UNPACKED or unpacked / packed > _MAX_RATIO:
        raise _bad_file("the workbook unpacks to more than a spreadsheet of products should")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds on a damaged or foreign workbook
        raise _bad_file("the XLSX workbook could not be read") from None
    try:
        sheet = book.worksheets[0]
        rows = []
        for row in sheet.iter_rows(values_only=True, max_col=_MAX_COLUMNS):
            rows.append(list(row))
            if len(rows) > MAX_ROWS + 1:
                break
        return rows
    finally:
        book.close()


def _cell(value: Any) -> str:
    """A cell as the text the API would have been sent."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # An id typed into a number cell comes back as 600000000001.0.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep="T", timespec="seconds")
    if isinstance(value, date):
        return datetime.combine(value, time()).isoformat(sep="T", timespec="seconds")
    return str(value).strip()


@dataclass
class Table:
    """A file's header and its rows (with their numbers in the file: the header is row 1)."""

    header: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)


def read_rows(data: bytes, kind: Kind) -> Table:
    """The file's columns (checked) and its non-empty rows, as text."""
    raw = _xlsx_rows(data) if kind == "xlsx" else _csv_rows(data)
    if not raw:
        raise _bad_file("the file is empty: the first row must name the columns")
    header = [_cell(v) for v in raw[0]]
    while header and not header[-1]:
        header.pop()
    known = _known_columns()
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise _bad_file(f"the column {name!r} appears twice", "duplicate_column")
        seen.add(name)
        if name not in known and name not in READ_ONLY_COLUMNS:
            raise ApiError(422, "unknown_column",
                           f"no column {name!r}: columns are the API's JSON paths, e.g. title, "
                           "price, targets.taobao.item_id (see the template)", name or "file")
    if "title" not in seen:
        raise _bad_file("the file has no title column", "missing_column")
    table = Table(header)
    for number, values in enumerate(raw[1:], start=2):
        cells = [_cell(v) for v in values[:len(header)]]
        if any(cells):
            table.rows.append((number, cells + [""] * (len(header) - len(cells))))
    if len(table.rows) > MAX_ROWS:
        raise _bad_file(f"the file holds more than {MAX_ROWS} products: split it",
                        "too_many_rows")
    return table


def row_body(header: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
    """One row as the body ``POST /api/products`` takes (empty cells left out)."""
    body: dict[str, Any] = {}
    for name, value in zip(header, cells, strict=True):
        if not value or name in READ_ONLY_COLUMNS:
            continue
        if name.startswith("targets."):
            _, platform, target_field = name.split(".", 2)
            body.setdefault("targets", {}).setdefault(platform, {})[target_field] = value
        else:
            body[name] = value
    return body


# --- importing --------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """Per-row answers; ``created`` holds the products when they were written."""

    dry_run: bool
    rows: list[dict[str, Any]]
    created: list[Product] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r["status"] == "error")

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "rows_read": len(self.rows),
                "valid": len(self.rows) - self.errors, "invalid": self.errors,
                "created": len(self.created), "rows": self.rows}


def _error(exc: ApiError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "field": exc.field}


async def import_products(store: Store, merchant: Merchant, table: Table, *, dry_run: bool,
                          zone: tzinfo = UTC) -> ImportResult:
    """Check every row; unless ``dry_run`` or any row is wrong, create them all at once."""
    rows: list[dict[str, Any]] = []
    checked: list[tuple[dict[str, Any], dict[str, Any]]] = []
    slugs: dict[str, int] = {}
    for number, cells in table.rows:
        fields, errors = product_errors(row_body(table.header, cells), merchant,
                                        partial=False, zone=zone)
        slug = fields.get("slug")
        if slug is not None:
            if slug in slugs:
                errors.append(ApiError(409, "slug_taken",
                                       f"the slug {slug!r} is also in row {slugs[slug]}", "slug"))
            else:
                slugs[slug] = number
        answer: dict[str, Any] = {"row": number, "status": "error" if errors else "ok",
                                  "title": fields.get("title") or cells[0], "slug": slug,
                                  "errors": [_error(e) for e in errors]}
        rows.append(answer)
        checked.append((answer, fields))
    if slugs:
        taken = await store.links(list(slugs))
        for answer, fields in checked:
            if fields.get("slug") in taken:
                answer["status"] = "error"
                answer["errors"].append(_error(ApiError(
                    409, "slug_taken", f"the slug {fields['slug']!r} is taken", "slug")))
    result = ImportResult(dry_run, rows)
    if dry_run or result.errors:
        return result
    result.created = await _create_all(store, merchant.id, [f for _, f in checked])
    for answer, product in zip(rows, result.created, strict=True):
        answer.update(status="created", id=product.id, code=product.code)
    return result


async def _create_all(store: Store, merchant_id: str,
                      checked: Sequence[Mapping[str, Any]]) -> list[Product]:
    slugs = {f["slug"] for f in checked if f.get("slug")}
    for _attempt in range(_CODE_ATTEMPTS):
        batch = [NewProduct(code=f.get("slug") or new_code(), title=f["title"],
                            targets=f["targets"], image_url=f.get("image_url"),
                            price=f.get("price"), valid_from=f.get("valid_from"),
                            valid_until=f.get("valid_until")) for f in checked]
        try:
            return await store.create_products(merchant_id, batch)
        except CodeTaken as exc:
            if str(exc) in slugs:  # taken since it was checked: the file must change
                raise ApiError(409, "slug_taken", f"the slug {exc} is taken", "slug") from None
            # A random code that happened to be taken: new ones, and the batch again.
    raise ApiError(503, "unavailable", "could not allocate share codes, try again")


# --- writing ----------------------------------------------------------------------------------
def _product_row(product: Product, columns: Sequence[str], public_url: str, zone: tzinfo,
                 now: float) -> list[str | None]:
    values: dict[str, str | None] = {
        "title": product.title, "price": product.price, "image_url": product.image_url,
        "slug": product.code, "valid_from": moment_text(product.valid_from, zone),
        "valid_until": moment_text(product.valid_until, zone),
        "share_url": share_url(public_url, product.code), "state": product.state(now)}
    for platform, target in product.targets.items():
        for name, value in target.items():
            values[f"targets.{platform}.{name}"] = value
    return [values.get(c) for c in columns]


def _table_bytes(kind: Kind, columns: Sequence[str], rows: Iterable[Sequence[str | None]],
                 *, text_columns: Sequence[str] = (), text_rows: int = 0,
                 notes: Sequence[Sequence[str]] = ()) -> bytes:
    """The file: CSV, or a workbook whose ``text_columns`` are formatted as text down to row
    ``text_rows + 1`` (beyond the rows written: where a merchant will type)."""
    if kind == "csv":
        # Excel opens a UTF-8 CSV as UTF-8 only when it starts with a BOM.
        return ("\ufeff" + csv_text(columns, rows)).encode("utf-8")
    import openpyxl
    from openpyxl.utils import get_column_letter

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "商品"
    sheet.append(list(columns))
    for values in rows:
        sheet.append([None] * len(columns))
        for index, value in enumerate(values, start=1):
            if value is not None:
                cell = sheet.cell(row=sheet.max_row, column=index)
                cell.value = value
                cell.data_type = "s"  # text as text: "=..." never becomes a formula
    sheet.freeze_panes = "A2"
    for index, name in enumerate(columns, start=1):
        letter = get_column_letter(index)
        sheet.column_dimensions[letter].width = max(14, min(len(name) + 2, 40))
        if name in text_columns:
            # Ids typed into the template stay text: a number cell would round 17 digits.
            for row in range(2, max(text_rows, sheet.max_row - 1) + 2):
                sheet.cell(row=row, column=index).number_format = "@"
    if notes:
        help_sheet = book.create_sheet("说明")
        for line in notes:
            help_sheet.append(list(line))
        for letter, width in zip("ABCD", (34, 18, 60, 40), strict=True):
            help_sheet.column_dimensions[letter].width = width
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def read_file(data: bytes, kind: Kind) -> Table:
    """``read_rows`` on a worker thread, for a request handler: reading a workbook is pure
    Python and takes seconds at the limits (1,000 rows of 200 columns: ~3 s), and every
    share link waits behind whatever holds the event loop. The thread hands the
    interpreter back every few milliseconds, so the shoppers' redirects go on meanwhile."""
    return await asyncio.to_thread(read_rows, data, kind)


async def export_file(products: Sequence[Product], kind: Kind, public_url: str, *,
                      zone: tzinfo = UTC, now: float = 0.0) -> bytes:
    """``export_table`` on a worker thread, for a request handler (see ``read_file``)."""
    return await asyncio.to_thread(export_table, products, kind, public_url, zone=zone,
                                   now=now)


def export_table(products: Sequence[Product], kind: Kind, public_url: str, *,
                 zone: tzinfo = UTC, now: float = 0.0) -> bytes:
    """The products as the import reads them: base columns, the target columns in use."""
    used = {f"targets.{p}.{name}" for product in products
            for p, target in product.targets.items() for name in target}
    columns = [*BASE_COLUMNS, *(c for c in target_columns() if c in used), *READ_ONLY_COLUMNS]
    rows = [_product_row(p, columns, public_url, zone, now) for p in products]
    return _table_bytes(kind, columns, rows, text_columns=columns)


_BASE_NOTES: dict[str, tuple[str, str, str]] = {
    "title": ("商品标题", "必填，一行文字，最多 200 字", "明前龙井 250g"),
    "price": ("价格（可选）", "数字，最多两位小数", "168.00"),
    "image_url": ("图片网址（可选）", "https 开头的公开图片地址", "https://img.example.com/tea.jpg"),
    "slug": ("链接短码（可选）",
             "分享链接 /p/ 后面的部分：3–64 位字母、数字、- 或 _；不填则自动生成", "longjing-250"),
    "valid_from": ("开售时间（可选）",
                   "之前打开链接会看到「尚未开始」；不写时区则按看板的时区（默认北京时间）",
                   "2026-06-18 20:00"),
    "valid_until": ("结束时间（可选）", "之后打开链接会看到「已结束」，点击照常计数",
                    "2026-06-20 23:59"),
}


def column_docs() -> list[tuple[str, str, str, str]]:
    """Every column an import reads: (name, what it is, what to type, an example)."""
    found = [(name, *_BASE_NOTES[name]) for name in BASE_COLUMNS]
    for adapter in ADAPTERS:
        if adapter.is_target:
            for name in adapter.form_fields:
                doc = adapter.field_doc(name)
                found.append((f"targets.{adapter.platform}.{name}",
                              f"{adapter.label} {doc.label}", doc.help, doc.example))
    return found


async def template_file(kind: Kind) -> bytes:
    """``template_table`` on a worker thread, for a request handler (see ``read_file``): the
    XLSX takes ~0.5 s (every target column formatted as text for MAX_ROWS rows)."""
    return await asyncio.to_thread(template_table, kind)


@functools.cache  # the same bytes until the gateway restarts: its columns come from code
def template_table(kind: Kind) -> bytes:
    """An empty file with every column, and (XLSX) a second sheet saying what each means."""
    columns = [*BASE_COLUMNS, *target_columns()]
    notes = [("列名", "名称", "说明", "示例"), *column_docs()]
    return _table_bytes(kind, columns, [], text_columns=target_columns(), text_rows=MAX_ROWS,
                        notes=notes)
