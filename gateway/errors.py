"""Every error a client sees: JSON with a stable code for the API, a plain page for shoppers.

No stack trace ever leaves the gateway; an unexpected exception is logged with its trace
and answered with ``internal_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .jsonout import json_response
from .store import StoreUnavailable
from .tally import REQUESTS

__all__ = ["ApiError", "add_fallback_routes", "error_response", "guarded", "json_error"]

log = structlog.get_logger("linkloop.http")

# Stable codes for the HTTP errors aiohttp raises itself.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    503: "unavailable",
}

# What a shopper reads for the same errors.
_PAGE_TEXT = {
    404: ("链接不存在", "这个链接不存在，请检查是否完整复制。"),
    405: ("无法打开", "请直接点击链接打开。"),
    410: ("商品已下架", "这个商品链接已失效。"),
    503: ("请稍后再试", "服务暂时不可用，请稍后再试。"),
}


class ApiError(Exception):
    """An error the API answers on purpose: status, stable code, message, offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def json_error(status: int, code: str, message: str, field: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response({"error": error}, status=status, headers=headers)


def _is_api(request: web.Request) -> bool:
    """Whether a program reads the answer: the API, and WeCom at its callback."""
    return request.path.startswith(("/api/", "/wecom/"))


def _answer(request: web.Request, status: int, code: str, message: str) -> web.Response:
    if _is_api(request):
        return json_error(status, code, message)
    from .appkeys import PAGES  # the page renderer is an app resource

    title, detail = _PAGE_TEXT.get(status, ("出错了", "页面暂时无法打开，请稍后再试。"))
    return request.app[PAGES].message(status, code, title, detail)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer for an exception a handler let out; a redirect raised is re-raised."""
    if isinstance(exc, ApiError):
        return json_error(exc.status, exc.code, exc.message, exc.field)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # redirects are answers, not errors
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "the request body is too large"
        response = _answer(request, exc.status, code, message)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        if exc.status == 408:  # the rest of that body may still come: no next request
            response.force_close()
        return response
    if isinstance(exc, (ConnectionResetError, HttpProcessingError, web.RequestPayloadError)):
        # The client went away, broke its body off mid-way, or sent one aiohttp cannot
        # undo (Content-Encoding: gzip over bytes that are not): its doing, not
        # ours, so a warning without a traceback (like a malformed request, see
        # gateway/logs.py). A RequestPayloadError wraps the parser's error: that one is named.
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else None
        log.warning("http.body_unreadable", path=request.path, method=request.method,
                    error=type(cause or exc).__name__)
        response = _answer(request, 400, "bad_request", "the request body could not be read")
        # What is left of that body cannot be told from a next request: close, and say so
        # (a client would otherwise send its next request down a connection aiohttp drops).
        response.force_close()
        return response
    if isinstance(exc, StoreUnavailable):
        log.warning("http.storage_unavailable", path=request.path, error=str(exc))
        return _answer(request, 503, "unavailable", "storage is unavailable, try again shortly")
    log.error("http.unexpected_error", path=request.path, method=request.method,
              exc_info=exc)
    return _answer(request, 500, "internal_error", "something went wrong on our side")


def guarded(handler: Handler) -> Handler:
    """``handler`` with every error answered by ``error_response``.

    A wrapper per route rather than an app middleware: a middleware runs on every request,
    and the share link's handler, the hot path, catches its own errors inline instead.
    """

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect raised: an answer, which aiohttp sends
                _count(request, exc.status)
                raise
            response = error_response(request, exc)
        except Exception as exc:
            response = error_response(request, exc)
        _count(request, response.status)
        return response

    return guard


def _count(request: web.Request, status: int) -> None:
    """One more request answered, by route template and status, for GET /metrics."""
    resource = request.match_info.route.resource
    REQUESTS[resource.canonical if resource is not None else "", status] += 1


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def add_fallback_routes(app: web.Application) -> None:
    """Our 404 and 405 answers (not aiohttp's plain text) for requests no route takes.

    Call last: every resource gets a catch-all method answering 405 with its Allow header,
    and a catch-all path answers 404.
    """
    # Several resources may share a path (a named GET and a POST, say): the methods of all
    # of them are allowed, and only the last one, tried last, takes the rest.
    last: dict[str, web.Resource] = {}
    allowed: dict[str, set[str]] = {}
    for resource in app.router.resources():
        if isinstance(resource, web.Resource):
            last[resource.canonical] = resource
            allowed.setdefault(resource.canonical, set()).update(r.method for r in resource)
    for path, resource in last.items():
        if hdrs.METH_ANY in allowed[path]:
            continue
        allow = sorted(allowed[path])

        async def not_allowed(request: web.Request, allow: list[str] = allow,
                              ) -> web.StreamResponse:
            raise web.HTTPMethodNotAllowed(request.method, allow)

        resource.add_route(hdrs.METH_ANY, guarded(not_allowed))
    # [\s\S], not ".": a path may decode to a line break (/api/%0A), and "." stops there,
    # leaving aiohttp's plain-text 404.
    app.router.add_route(hdrs.METH_ANY, r"/{tail:[\s\S]*}", guarded(_not_found))
