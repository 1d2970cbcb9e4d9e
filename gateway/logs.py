"""structlog set-up: one JSON object a line, request context (the click id) on every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

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
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
