"""A small client for WeChat's server API: access tokens and mini-program URL Links.

Tokens are cached per app until five minutes before WeChat says they expire; an expired or
invalid token is refreshed once and the call retried. The base URL comes from settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from cachetools import TTLCache

__all__ = ["WeChatApiError", "WeChatClient"]

# errcodes that mean "this access token is no good": refresh and retry once.
_TOKEN_ERRORS = frozenset({40001, 40014, 42001})
_EARLY_EXPIRY = 300


class WeChatApiError(Exception):
    """WeChat refused a call (``errcode``) or could not be reached (``errcode`` None)."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


class WeChatClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens: TTLCache[tuple[str, str], tuple[str, float]] = TTLCache(1024, 7200)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _json(self, method: str, path: str, params: dict[str, str],
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self._session.request(method, f"{self._base}/{path}", params=params,
                                             json=body, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise WeChatApiError(f"{path}: HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WeChatApiError(f"{path}: {type(exc).__name__} {exc}") from None
        if not isinstance(data, dict):
            raise WeChatApiError(f"{path}: the answer is not a JSON object")
        return data

    async def access_token(self, appid: str, secret: str, *, refresh: bool = False) -> str:
        key = (appid, secret)
        loop = asyncio.get_running_loop()
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached and cached[1] > loop.time() and not refresh:
                return cached[0]
            data = await self._json("GET", "cgi-bin/token", {
                "grant_type": "client_credential", "appid": appid, "secret": secret})
            if data.get("errcode", 0) != 0 or not data.get("access_token"):
                raise WeChatApiError(f"token: {data.get('errmsg', 'no token')}",
                                     data.get("errcode"))
            ttl = max(60, int(data.get("expires_in", 7200)) - _EARLY_EXPIRY)
            self._tokens[key] = (str(data["access_token"]), loop.time() + ttl)
            return str(data["access_token"])

    async def generate_urllink(self, appid: str, secret: str, *, path: str, query: str,
                               expire_days: int) -> str:
        """A URL Link opening ``path?query`` of the mini-program, valid ``expire_days``."""
        body = {"path": path, "query": query, "expire_type": 1,
                "expire_interval": expire_days}
        for attempt in range(2):
            token = await self.access_token(appid, secret, refresh=attempt > 0)
            data = await self._json("POST", "wxa/generate_urllink", {"access_token": token},
                                    body)
            errcode = int(data.get("errcode", 0))
            if errcode == 0 and data.get("url_link"):
                return str(data["url_link"])
            if errcode not in _TOKEN_ERRORS:
                raise WeChatApiError(f"generate_urllink: {data.get('errmsg', 'error')}",
                                     errcode)
        raise WeChatApiError("generate_urllink: the token stayed invalid after a refresh")
