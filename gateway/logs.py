"""structlog set-up: one JSON object a line, request context (the click id) on every line.

Libraries that log through the standard library (aiohttp, asyncio) are rendered the same
way, one JSON object a line. A request aiohttp cannot parse (a bad request line or header, an
over-long line) is the client's mistake, not ours: it is one warning naming the error,
instead of aiohttp's error-level traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

__all__ = ["CLICK_ID", "configure_logging"]

#: The click a request is about. Set by the share link on every click: a plain ContextVar
#: costs a fraction of structlog's ``bind_contextvars`` there. aiohttp runs each request in
#: a task of its own, so the value ends with the request.
CLICK_ID: ContextVar[str | None] = ContextVar("click_id", default=None)


def _add_click_id(_logger: Any, _method: str,
                  event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    click_id = CLICK_ID.get()
    if click_id is not None:
        event.setdefault("click_id", click_id)
    return event


class _StderrHandler(logging.Handler):
    """Writes each formatted record as one line to the stderr of the moment (see below)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


class _MalformedRequests(logging.Filter):
    """aiohttp's "Error handling request" with a parser error becomes one warning line.

    The error's class names what was wrong (``BadStatusLine``, ``InvalidHeader``,
    ``LineTooLong``...) and ``reason`` its message up to the first colon: what follows
    quotes the client's raw bytes, which may carry a token or a cookie.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            # A body aiohttp could not undo (gzip that is not): a handler that read it has
            # answered 400 and logged it, one that did not has answered for its own reason;
            # aiohttp then reads the rest of the body to keep the connection, meets the
            # error (again) and calls it unhandled. Not an event of its own.
            return False
        if not isinstance(exc, HttpProcessingError):
            return True
        structlog.get_logger("linkloop.http").warning(
            "http.malformed_request", error=type(exc).__name__, status=exc.code,
            reason=exc.message.split(":", 1)[0].strip()[:80])
        return False


class _PoolFloor(logging.Filter):
    """asyncpg's pool, reconnecting its floor while PostgreSQL is away, logs a warning with
    the connection error's whole traceback (backing off to once a minute): an outage, not
    a bug. It becomes one line that names the error, as the store's own outage lines do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("asyncpg.pool") or not record.exc_info:
            return True
        exc = record.exc_info[1]
        structlog.get_logger("linkloop.store").warning(
            "store.pool_reconnect_failed", message=record.getMessage(),
            error=f"{type(exc).__name__}: {exc}"[:200])
        return False


def _stdlib_logging(level: str, renderer: structlog.typing.Processor) -> None:
    """Route the standard library's records through structlog's renderer."""
    handler = _StderrHandler()
    handler.addFilter(_MalformedRequests())
    handler.addFilter(_PoolFloor())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)  # configured again (tests do): one handler, not two
    root.addHandler(handler)
    # Python warnings (aiohttp warns of a multipart part's malformed Content-Disposition, a
    # client's doing) as JSON lines too, not raw text between them.
    logging.captureWarnings(True)
    # Libraries' info and debug chatter stays out unless asked for by a higher level.
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_click_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        # Looked up per logger, not once: stderr may be swapped (daemon managers, tests).
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiohttp's own access log is off (the click is the record); keep its errors visible.
    _stdlib_logging(level, renderer)
