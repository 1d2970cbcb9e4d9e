"""What the WeChat and WeCom clients share: JSON over one aiohttp session, cached tokens.

Both platforms answer JSON with an ``errcode``, and both hand out access tokens that live
for ``expires_in`` seconds. ``JsonApi`` makes the calls and turns transport trouble into
the platform's own error class; ``TokenCache`` keeps each app's token until five minutes
before it expires, fetching it once however many callers ask at the same moment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from cachetools import TTLCache

from .tally import PLATFORM_CALLS, PLATFORM_ERRORS

__all__ = ["JsonApi", "PlatformApiError", "TokenCache"]

_EARLY_EXPIRY = 300


class PlatformApiError(Exception):
    """A platform refused a call (``errcode``) or could not be reached (``errcode`` None)."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


class JsonApi:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float,
                 error: type[PlatformApiError]) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._error = error
        #: "wecom" or "wechat", as GET /metrics labels the calls (from WeComApiError...).
        self.platform = error.__name__.removesuffix("ApiError").lower()

    async def fetch(self, method: str, path: str, params: Mapping[str, str],
                    body: Mapping[str, Any] | None = None) -> tuple[str, bytes]:
        """(content type, body) of a call that may answer with something other than JSON
        (WeChat's mini-program code: the image, or a JSON error)."""
        PLATFORM_CALLS[self.platform, path] += 1
        try:
            async with self._session.request(method, f"{self._base}/{path}", params=params,
                                             json=body, timeout=self._timeout) as resp:
                if resp.status != 200:
                    PLATFORM_ERRORS[self.platform, path, "http"] += 1
                    raise self._error(f"{path}: HTTP {resp.status}")
                return resp.content_type, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            PLATFORM_ERRORS[self.platform, path, "transport"] += 1
            raise self._error(f"{path}: {type(exc).__name__} {exc}") from None

    async def request(self, method: str, path: str, params: Mapping[str, str],
                      body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.json_object(path, (await self.fetch(method, path, params, body))[1])

    def json_object(self, path: str, raw: bytes) -> dict[str, Any]:
        """A JSON object answer, or the platform's error."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError too
            PLATFORM_ERRORS[self.platform, path, "http"] += 1
            raise self._error(f"{path}: {type(exc).__name__} {exc}") from None
        if not isinstance(data, dict):
            PLATFORM_ERRORS[self.platform, path, "http"] += 1
            raise self._error(f"{path}: the answer is not a JSON object")
        errcode = data.get("errcode", 0)
        if errcode is not None and type(errcode) is not int:
            # Garbage from a proxy or a broken server: the platform's error, never the
            # caller's ValueError from int() (a 500 on the shopper's entry page).
            PLATFORM_ERRORS[self.platform, path, "http"] += 1
            raise self._error(f"{path}: errcode {str(errcode)[:40]!r} is not a number")
        if errcode:  # the caller decides what to do; here it is counted
            PLATFORM_ERRORS[self.platform, path, "errcode"] += 1
        return data

    def text(self, path: str, data: Mapping[str, Any], *keys: str) -> str:
        """The non-empty string at ``keys`` (nested objects) of an answer with errcode 0, or
        the platform's error: an answer without it is garbage, never a value to keep."""
        value: Any = data
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if not isinstance(value, str) or not value:
            PLATFORM_ERRORS[self.platform, path, "http"] += 1
            raise self._error(f"{path}: the answer has no {'.'.join(keys)}")
        return value

    def seconds(self, path: str, data: Mapping[str, Any], key: str, default: int) -> int:
        """A lifetime in seconds (``expires_in``): ``default`` when absent, else a whole
        number, or the platform's error."""
        value = data.get(key, default)
        if type(value) is not int:
            PLATFORM_ERRORS[self.platform, path, "http"] += 1
            raise self._error(f"{path}: {key} {str(value)[:40]!r} is not a number")
        return value


class TokenCache:
    """Access tokens per (app id, secret), each kept until shortly before it expires."""

    def __init__(self) -> None:
        self._tokens: TTLCache[tuple[str, str], tuple[str, float]] = TTLCache(1024, 7200)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, key: tuple[str, str], fetch: Callable[[], Awaitable[tuple[str, int]]],
                  *, refresh: bool = False, stale: str | None = None) -> str:
        """The cached token, or ``fetch()`` -> (token, expires_in) once for all waiters.

        ``refresh``: fetch a new one whatever is cached; ``stale``: the platform refused this
        token, so fetch a new one unless another caller already replaced it (calls in flight
        together that all saw it refused fetch one token between them, not one each).
        """
        loop = asyncio.get_running_loop()

        def usable(cached: tuple[str, float] | None) -> bool:
            return (cached is not None and cached[1] > loop.time() and not refresh
                    and cached[0] != stale)

        cached = self._tokens.get(key)
        if usable(cached):
            assert cached is not None
            return cached[0]
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if usable(cached):
                assert cached is not None
                return cached[0]  # another caller fetched it while we waited
            token, expires_in = await fetch()
            self._tokens[key] = (token, loop.time() + max(60, expires_in - _EARLY_EXPIRY))
            return token
