"""What every console page shares with the dashboard: the session, CSRF, the layout.

A ``merchant`` login (or ``admin``) edits; a ``marketing`` login sees the same pages without
their edit controls, and every write it attempts is answered 403, checked here on the
server whatever the page showed. Every form posts the session's CSRF token, and a POST from
another origin is refused (``same_origin``), as the dashboard's logout is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ..appkeys import PUBLIC_URL, STORE
from ..dashboard.session import Session, csrf_matches, same_origin
from ..dashboard.views import (
    current_session,
    error_page,
    render,
    require_session,
    storage_guarded,
)
from ..errors import ApiError
from ..inputs import read_form
from ..store import Merchant

__all__ = ["Page", "check_post", "console_page", "console_write", "forbidden", "merchant_of",
           "page_context", "render", "require_session", "see_other"]

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def console_page(handler: Page) -> Page:
    """Storage trouble as the dashboard's page; an ``ApiError`` nobody caught as a page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            session = await current_session(request)
            title = {404: "找不到这个页面", 413: "文件太大"}.get(exc.status, "操作未完成")
            detail = ("这个商品或页面不存在，或者不属于你的店铺。" if exc.status == 404
                      else exc.message)
            return error_page(request, exc.status, title, detail, session=session)

    return storage_guarded(wrapped)


def forbidden(request: web.Request, session: Session) -> web.Response:
    return error_page(request, 403, "没有修改权限",
                      "你的账号是「市场」角色，可以查看，但不能修改商品、渠道和企业微信设置。"
                      "如需修改，请联系商家账号。", session=session)


def _refused(request: web.Request, session: Session) -> web.Response:
    return error_page(request, 403, "操作未完成",
                      "这个请求没有通过安全校验（可能来自其他网站，或页面已过期）。"
                      "请回到看板页面再试一次。", session=session)


async def check_post(request: web.Request, form: Mapping[str, Any] | None = None,
                     ) -> tuple[Session, web.Response | None]:
    """The session of a write, or the page that refuses it: not signed in (to the login),
    not allowed to edit (403), another origin or a wrong CSRF token (403)."""
    session = await require_session(request)
    if not session.principal.can_write:
        return session, forbidden(request, session)
    posted = await read_form(request) if form is None else form
    if (not same_origin(request, request.app[PUBLIC_URL])
            or not csrf_matches(session.csrf, posted.get("csrf"))):
        return session, _refused(request, session)
    return session, None


Write = Callable[[web.Request, Session, Mapping[str, Any]], Awaitable[web.StreamResponse]]


def console_write(handler: Write) -> Page:
    """A form's POST: refused (see ``check_post``) unless its session may write and it
    carries the session's CSRF token from our own origin; else ``handler(request, session,
    form)``."""

    @console_page
    async def wrapped(request: web.Request) -> web.StreamResponse:
        form = await read_form(request)
        session, refused = await check_post(request, form)
        if refused is not None:
            return refused
        return await handler(request, session, form)

    return wrapped


async def merchant_of(request: web.Request, session: Session) -> Merchant:
    merchant = await request.app[STORE].get_merchant(session.merchant_id)
    if merchant is None:
        raise ApiError(404, "not_found", "no such merchant")
    return merchant


async def page_context(request: web.Request, session: Session, nav: str) -> dict[str, Any]:
    """What the layout needs: who is signed in, for which shop, on which tab."""
    merchant = await request.app[STORE].get_merchant(session.merchant_id)
    return {"session": session, "nav": nav, "can_edit": session.principal.can_write,
            "merchant_name": merchant.name if merchant else session.merchant_id,
            "merchant": merchant, "public_url": request.app[PUBLIC_URL]}


def see_other(location: str) -> web.Response:
    """After a write: the page to look at (303, so a reload does not post again)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

