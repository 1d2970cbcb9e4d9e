"""Bulk import in the console: upload a CSV or XLSX, see the dry run row by row, then import.

The upload goes through the code ``POST /api/products/import`` runs (``gateway.bulk``): the
first post is always a dry run that writes nothing. When every row is good, the page offers
to import exactly that file (sent back in a hidden field, and checked whole again: an
import is all-or-nothing, whatever changed in between).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from ..api import after_save
from ..api_console import file_response, read_upload
from ..appkeys import CLOCK, SETTINGS, STORE
from ..bulk import (
    MAX_ROWS,
    ImportResult,
    Kind,
    column_docs,
    import_products,
    kind_of,
    read_file,
    template_file,
)
from ..errors import ApiError, guarded
from ..inputs import UNREADABLE_FORM, body_idle, body_stalled, unreadable_form
from .messages import field_label, say
from .web import (
    check_post,
    console_page,
    merchant_of,
    page_context,
    render,
    require_session,
    see_other,
)

__all__ = ["setup_routes"]

_TEXT_PART_MAX = 4096


async def _page(request: web.Request, *, status: int = 200, result: ImportResult | None = None,
                error: str = "", file_data: str = "", file_name: str = "",
                imported: int = 0) -> web.Response:
    session = await require_session(request)
    merchant = await merchant_of(request, session)
    rows = []
    if result is not None:
        for row in result.rows:
            rows.append({**row, "problems": [
                (field_label(e["field"]),
                 say(ApiError(422, e["code"], e["message"], e["field"]), merchant),
                 e["code"], e["field"]) for e in row["errors"]]})
    return render(
        request, "console/import.html", status=status, result=result, rows=rows, error=error,
        file_data=file_data, file_name=file_name, imported=imported, columns=column_docs(),
        max_rows=MAX_ROWS, **await page_context(request, session, "import"))


@console_page
async def import_page(request: web.Request) -> web.StreamResponse:
    imported = request.query.get("imported", "")
    return await _page(request, imported=int(imported) if imported.isdigit() else 0)


async def _parts(request: web.Request, seconds: float) -> AsyncIterator[BodyPartReader]:
    """The upload's parts (nested multiparts skipped), each waited for at most ``seconds``;
    a body cut short, without its boundary or with a part that is not one is the 400 of
    any unreadable form."""
    try:
        reader = await request.multipart()
        while True:
            async with asyncio.timeout(seconds):  # a part's headers, as its bytes below
                part = await reader.next()
            if part is None:
                return
            if isinstance(part, BodyPartReader):
                yield part
    except UNREADABLE_FORM:
        raise unreadable_form() from None
    except TimeoutError:
        raise body_stalled(seconds) from None


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(64 * 1024):
            yield chunk
    except UNREADABLE_FORM:
        raise unreadable_form() from None


async def _text(part: BodyPartReader, seconds: float, limit: int = _TEXT_PART_MAX) -> str:
    return (await read_upload(_chunks(part), limit, seconds)).decode("utf-8", "replace")


@console_page
async def upload(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    if not session.principal.can_write:
        _, refused = await check_post(request, {})
        assert refused is not None
        return refused
    limit: int = request.app[SETTINGS]["server.import_max_bytes"]
    seconds = body_idle(request)  # the longest wait for a part's next bytes
    if not request.content_type.startswith("multipart/"):  # not our form's encoding
        _, refused = await check_post(request)
        return refused or await _page(request, status=422, error="请选择一个 CSV 或 XLSX 文件。")
    fields: dict[str, str] = {}
    data = b""
    file_name = ""
    content_type = ""
    checked = False
    async for part in _parts(request, seconds):
        if not checked:
            # The form sends the CSRF token first: nothing else is read before it is checked.
            token = await _text(part, seconds) if part.name == "csrf" else ""
            _, refused = await check_post(request, {"csrf": token})
            if refused is not None:
                return refused
            checked = True
            continue
        if part.name == "file":
            file_name = part.filename or ""
            content_type = part.headers.get("Content-Type", "")
            data = await read_upload(_chunks(part), limit, seconds)
        elif part.name == "data":  # the file of the dry run, sent back to import it
            encoded = await _text(part, seconds, limit * 2)
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                return await _page(request, status=422, error="文件内容已损坏，请重新上传。")
        elif part.name:
            fields[part.name] = await _text(part, seconds)
    if not checked:
        _, refused = await check_post(request, {})
        assert refused is not None
        return refused
    file_name = fields.get("file_name", file_name)
    if not data:
        return await _page(request, status=422, error="请选择一个 CSV 或 XLSX 文件。")
    return await _run(request, session, data, file_name, content_type,
                      confirm=fields.get("confirm") == "1")


def _kind(file_name: str, content_type: str, data: bytes) -> Kind | None:
    if file_name.lower().endswith(".csv"):
        return "csv"
    if file_name.lower().endswith(".xlsx"):
        return "xlsx"
    return kind_of(content_type, data)


async def _run(request: web.Request, session: Any, data: bytes, file_name: str,
               content_type: str, *, confirm: bool) -> web.StreamResponse:
    kind = _kind(file_name, content_type, data)
    if kind is None:
        return await _page(request, status=415, error="只能导入 CSV 或 XLSX（Excel）文件。")
    merchant = await merchant_of(request, session)
    try:
        table = await read_file(data, kind)
        result = await import_products(request.app[STORE], merchant, table,
                                       dry_run=not confirm, zone=request.app[CLOCK].zone)
    except ApiError as exc:
        return await _page(request, status=exc.status, error=_file_error(exc))
    if confirm and not result.errors:
        for product in result.created:
            await after_save(request.app, product, wait=False)
        return see_other(f"/dashboard/import?imported={len(result.created)}")
    return await _page(request, status=422 if result.errors else 200, result=result,
                       file_data=base64.b64encode(data).decode() if not result.errors else "",
                       file_name=file_name)


def _file_error(exc: ApiError) -> str:
    """What is wrong with the file as a whole, in Chinese."""
    if exc.code == "unknown_column":
        return f"表格里有不认识的列「{exc.field}」：列名要和模板里的一样。"
    if exc.code == "duplicate_column":
        return "表格里有重复的列，请删掉一列。"
    if exc.code == "missing_column":
        return "表格里缺少 title（商品标题）列。"
    if exc.code == "too_many_rows":
        return f"一次最多导入 {MAX_ROWS} 个商品，请分成几个文件。"
    if exc.code == "body_too_large":
        return "文件太大了，请分成几个文件。"
    return "文件读不出来：请用模板另存为 CSV（UTF-8）或 XLSX 后再上传。"


@console_page
async def template(request: web.Request) -> web.StreamResponse:
    await require_session(request)
    kind: Kind = "csv" if request.match_info["fmt"] == "csv" else "xlsx"
    return file_response(await template_file(kind), kind, "linkloop-products-template")


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/dashboard/import", guarded(import_page))
    router.add_post("/dashboard/import", guarded(upload))
    router.add_get(r"/dashboard/import/template.{fmt:csv|xlsx}", guarded(template))

