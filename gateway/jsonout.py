"""Every JSON answer in UTF-8: ``明前龙井``, not ``\\u660e\\u524d\\u9f99\\u4e95``.

``aiohttp.web.json_response`` and ``json.dumps`` escape every non-ASCII character by
default: valid JSON, but six bytes a character and unreadable in a terminal or a log. The
gateway's routes answer through ``json_response`` here and the CLI prints through
``dumps``, so there is one place that decides.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = ["dumps", "json_response"]

#: ``json.dumps`` as every answer uses it: UTF-8 text, not ``\\u`` escapes.
dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(data: Any, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """``data`` as ``application/json; charset=utf-8``."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)
