"""What every API input must be before a handler reads it: JSON bodies, text, integers.

Hostile but parseable input must be a 4xx with the JSON error shape, never a 500, and never
something stored that later breaks a shopper's page:

* a JSON body is parsed without ``NaN``/``Infinity`` literals and without recursion limits
  being hit (deep nesting is refused), and then walked once, without recursion, for what
  no field may hold anywhere: lone surrogates (RFC 8259 section 8.2 leaves them undefined;
  they cannot be encoded to UTF-8, so storage, pages and answers fail on them), integers
  outside the signed 64-bit range every store keeps, non-finite numbers;
* text a person wrote and others read (a title) is plain: no C0 or C1 control characters,
  which break CSV rows, headers and PostgreSQL (which refuses NUL in text);
* an integer in a path or query string is ASCII digits in the 64-bit range: ``int()`` alone
  takes ``" 1_0"`` and Arabic-Indic digits, and a store raises on a 20-digit id;
* a console or login form is a form aiohttp can read: ``request.post()`` raises on bytes
  that are not in the form's charset, a charset Python does not know, a multipart body cut
  short or without its boundary, a part in an encoding it cannot undo. Each is the
  sender's mistake, so each is a 400 page (``read_form``; the import's own multipart
  reader too), not a 500;
* a body arrives without long pauses: aiohttp waits for ever on a client that stops
  sending, and on a chunked body whose framing breaks after the handler began to read it
  (its parser queues the error as a next request, and the body being read never ends).
  Each read of a body waits at most ``server.body_idle_seconds`` (``next_bytes``), a form
  that long in all; then a 408.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .appkeys import SETTINGS
from .errors import ApiError

__all__ = ["MAX_DEPTH", "MAX_INT", "UNREADABLE_FORM", "body_idle", "body_stalled", "next_bytes",
           "parse_json", "parse_uint", "plain_text", "read_body", "read_form", "strict_int",
           "unreadable_form"]

#: Deepest nesting a body may have; the deepest real body (an entry's id lists) has 2.
MAX_DEPTH = 16
#: The largest integer any store keeps (a signed 64-bit column).
MAX_INT = 2**63 - 1
# C0 and C1 controls and DEL. Tab and newline too: a title is one line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIGITS = re.compile(r"[0-9]{1,19}")


class _NotJsonConstant(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's json reads them, JSON has none."""


def _no_constant(name: str) -> NoReturn:
    raise _NotJsonConstant(name)


def _name(key: str) -> str:
    """A key as it can be shown back in an error (a lone surrogate escaped)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _unicode(text: str) -> bool:
    """True when ``text`` is valid Unicode (no lone surrogate): it encodes to UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field or 'the body'} {message}", field or None)


def _check_tree(value: Any) -> None:
    """Walk a parsed body once (no recursion) for what no field may hold."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if not _unicode(item):
                raise _refuse(path, "is not valid Unicode text (it holds a lone surrogate)")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_INT <= item <= MAX_INT:
                raise _refuse(path, "is a number out of range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse(path, "is a number out of range")
        elif depth >= MAX_DEPTH:
            top = re.split(r"[.\[]", path, maxsplit=1)[0]  # the field it happened in
            raise ApiError(400, "invalid_json", f"the body nests deeper than {MAX_DEPTH} levels",
                           top or None)
        elif isinstance(item, dict):
            for key, child in item.items():
                field = f"{path}.{_name(key)}" if path else _name(key)
                if not _unicode(key):
                    raise _refuse(field, "is not a valid field name (it holds a lone surrogate)")
                stack.append((child, field, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, checked as the module says; ``ApiError`` (4xx) otherwise."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "invalid_json",
                       f"the body nests deeper than {MAX_DEPTH} levels") from None
    except _NotJsonConstant as exc:
        raise ApiError(400, "invalid_json",
                       f"the body is not valid JSON: {exc} is not a JSON number") from None
    except ValueError:  # UnicodeDecodeError too; and integers of over 4300 digits
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    _check_tree(value)
    return value


def plain_text(value: Any, field: str, max_length: int) -> str:
    """Non-empty one-line text a person reads, trimmed; ``ApiError`` (422) otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise _refuse(field, "must be a non-empty string")
    text = value.strip()
    if len(text) > max_length:
        raise _refuse(field, f"is longer than {max_length} characters")
    if not _unicode(text):
        raise _refuse(field, "is not valid Unicode text (it holds a lone surrogate)")
    if _CONTROL.search(text):
        raise _refuse(field, "must not contain control characters (tabs, line breaks...)")
    return text


def parse_uint(text: str | None) -> int | None:
    """``text`` as a whole number from 0 to ``MAX_INT`` written in ASCII digits, else None."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_INT else None


def strict_int(text: str | None, field: str, *, default: int,
               minimum: int = 0, maximum: int = MAX_INT) -> int:
    """A query integer: ASCII digits within ``minimum``..``maximum``; else 422 naming it."""
    if text is None or text == "":
        return default
    number = parse_uint(text)
    if number is None or not minimum <= number <= maximum:
        raise _refuse(field, f"must be a whole number from {minimum} to {maximum}")
    return number


# What aiohttp's form parser raises on a body it cannot read (UnicodeDecodeError and
# binascii.Error are ValueErrors; LookupError is an unknown charset; RuntimeError an unknown
# Content-Encoding or Content-Transfer-Encoding of a part; zlib.error a part that says gzip
# and is not; HttpProcessingError a part with too many headers).
UNREADABLE_FORM = (ValueError, LookupError, RuntimeError, zlib.error, HttpProcessingError)


def unreadable_form() -> web.HTTPBadRequest:
    """The 400 (a page, code ``bad_request``) for a form that raised ``UNREADABLE_FORM``."""
    return web.HTTPBadRequest(reason="the form could not be read: it is not UTF-8 form data "
                                     "or a whole multipart body")


def body_idle(request: web.Request) -> float:
    """How long a read of the request's body may wait for its next bytes."""
    seconds: float = request.app[SETTINGS]["server.body_idle_seconds"]
    return seconds


def body_stalled(seconds: float) -> web.HTTPRequestTimeout:
    """The 408 (code ``request_timeout``) for a body that stopped arriving."""
    return web.HTTPRequestTimeout(
        reason=f"the request body stopped arriving: nothing came for {seconds:g} seconds")


async def next_bytes(chunks: AsyncIterator[bytes], seconds: float) -> bytes | None:
    """The next piece of a body, None at its end; ``body_stalled`` when none comes in time."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise body_stalled(seconds) from None


async def read_body(chunks: AsyncIterator[bytes], *, limit: int, seconds: float) -> bytes:
    """A whole body from ``chunks``, each waited for at most ``seconds``; 413 (aiohttp's
    ``HTTPRequestEntityTooLarge``) as soon as it passes ``limit`` bytes."""
    data = bytearray()
    while (chunk := await next_bytes(chunks, seconds)) is not None:
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return bytes(data)


async def read_form(request: web.Request) -> Mapping[str, Any]:
    """The request's posted form; ``HTTPBadRequest`` (a 400 page) when it cannot be read,
    ``body_stalled`` when it has not all come within ``server.body_idle_seconds`` (aiohttp
    reads it whole, so the wait is for all of it: a form is a few hundred bytes)."""
    seconds = body_idle(request)
    try:
        async with asyncio.timeout(seconds):
            return await request.post()
    except UNREADABLE_FORM:
        raise unreadable_form() from None
    except TimeoutError:
        raise body_stalled(seconds) from None
