"""The WeCom entry point in the console: its kind and fields, secrets that are written and
never shown again, the callback URL to paste into WeCom's admin, and a button that checks
the settings against WeCom and shows what came back.

The form becomes the body ``PUT /api/entry`` takes and goes through ``validate_entry``; a
secret left empty keeps the stored one, "清除" sends null (clears it), as in the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..appkeys import ENTRIES, PUBLIC_URL
from ..dashboard.session import Session
from ..errors import ApiError, guarded
from ..store import Entry
from ..wecom.check import check_entry
from ..wecom.entry import SECRET_FIELDS, validate_entry
from .messages import say
from .web import console_page, console_write, page_context, render, require_session, see_other

__all__ = ["setup_routes"]

KIND_NAMES = {
    "acquisition_link": ("获客链接",
                         "企业微信「获客助手」的链接：顾客点一下就能加你，能统计添加数。"),
    "contact_way": ("联系我", "指定成员的「联系我」二维码，按平台自动生成，能统计添加数。"),
    "group": ("客户群", "顾客扫码进群，按平台自动生成入群二维码，能统计入群数。"),
    "static": ("静态二维码", "你自己的一张二维码图片。能统计进入次数，统计不到添加数。"),
}
_LIST_SPLIT = re.compile(r"[\s,，、;；]+")


def _ids(text: str) -> list[str]:
    return [part for part in _LIST_SPLIT.split(text) if part]


def form_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PUT /api/entry`` body the form says."""
    kind = str(data.get("kind", ""))
    body: dict[str, Any] = {"kind": kind}
    if kind in ("acquisition_link",):
        body["url"] = str(data.get("url", "")).strip()
    elif kind == "contact_way":
        body["users"] = _ids(str(data.get("users", "")))
    elif kind == "group":
        body["chat_ids"] = _ids(str(data.get("chat_ids", "")))
    elif kind == "static":
        body["qr_url"] = str(data.get("qr_url", "")).strip()
    for name in SECRET_FIELDS:
        value = str(data.get(name, "")).strip()
        if data.get(f"clear_{name}"):
            body[name] = None
        elif value:
            body[name] = value
    return body


def _values(entry: Entry | None) -> dict[str, str]:
    if entry is None:
        return {"kind": "acquisition_link", "url": "", "users": "", "chat_ids": "", "qr_url": ""}
    config = entry.config
    return {"kind": entry.kind, "url": str(config.get("url", "")),
            "users": "\n".join(config.get("users", [])),
            "chat_ids": "\n".join(config.get("chat_ids", [])),
            "qr_url": str(config.get("qr_url", ""))}


async def _page(request: web.Request, *, status: int = 200, values: dict[str, str] | None = None,
                error: ApiError | None = None, steps: list[Any] | None = None,
                saved: bool = False) -> web.Response:
    session = await require_session(request)
    entry = await request.app[ENTRIES].store.get_entry(session.merchant_id)
    return render(
        request, "console/entry.html", status=status, entry=entry,
        values=values or _values(entry), kinds=KIND_NAMES, secret_fields=SECRET_FIELDS,
        secrets_set={n: entry is not None and n in entry.secrets for n in SECRET_FIELDS},
        error=say(error) if error else "", error_field=error.field if error else "",
        error_code=error.code if error else "", steps=steps, saved=saved,
        callback_url=f"{request.app[PUBLIC_URL]}/wecom/callback/{session.merchant_id}",
        **await page_context(request, session, "entry"))


@console_page
async def entry_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, saved="saved" in request.query)


@console_write
async def save(request: web.Request, session: Session,
              data: Mapping[str, Any]) -> web.StreamResponse:
    directory = request.app[ENTRIES]
    previous = await directory.store.get_entry(session.merchant_id)
    values = {k: str(data.get(k, "")) for k in ("kind", "url", "users", "chat_ids", "qr_url")}
    try:
        entry = validate_entry(form_body(data), previous, session.merchant_id)
    except ApiError as exc:
        return await _page(request, status=422, values=values, error=exc)
    await directory.put(entry)
    return see_other("/dashboard/entry?saved=1")


@console_write
async def check(request: web.Request, session: Session,
               data: Mapping[str, Any]) -> web.StreamResponse:
    directory = request.app[ENTRIES]
    entry = await directory.store.get_entry(session.merchant_id)
    if entry is None:
        raise ApiError(404, "not_found", "还没有设置企业微信入口，请先保存设置。")
    return await _page(request, steps=await check_entry(directory.client, entry))


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/dashboard/entry", guarded(entry_page))
    router.add_post("/dashboard/entry", guarded(save))
    router.add_post("/dashboard/entry/check", guarded(check))
