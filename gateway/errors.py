"""Every error a client sees: JSON with a stable code for the API, a plain page for shoppers.

No stack trace ever leaves the gateway; an unexpected exception is logged with its trace
and answered with ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from .store import StoreUnavailable

__all__ = ["ApiError", "error_middleware", "json_error"]

log = structlog.get_logger("linkloop.http")

# Stable codes for the HTTP errors aiohttp raises itself.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
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
    return web.json_response({"error": error}, status=status, headers=headers)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _answer(request: web.Request, status: int, code: str, message: str) -> web.Response:
    if _is_api(request):
        return json_error(status, code, message)
    from .app import PAGES  # the page renderer is an app resource

    title, detail = _PAGE_TEXT.get(status, ("出错了", "页面暂时无法打开，请稍后再试。"))
    return request.app[PAGES].message(status, code, title, detail)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects are answers, not errors
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "the request body is too large"
        response = _answer(request, exc.status, code, message)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        return response
    except StoreUnavailable as exc:
        log.warning("http.storage_unavailable", path=request.path, error=str(exc))
        return _answer(request, 503, "unavailable", "storage is unavailable, try again shortly")
    except Exception:
        log.exception("http.unexpected_error", path=request.path, method=request.method)
        return _answer(request, 500, "internal_error", "something went wrong on our side")
