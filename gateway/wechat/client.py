"""A small client for WeChat's server API: access tokens and mini-program URL Links.

Tokens are cached per app until five minutes before WeChat says they expire; an expired or
invalid token is refreshed once and the call retried. The base URL comes from settings.
"""

from __future__ import annotations

import aiohttp

from ..platform_api import JsonApi, PlatformApiError, TokenCache

__all__ = ["WeChatApiError", "WeChatClient"]

# errcodes that mean "this access token is no good": refresh and retry once.
_TOKEN_ERRORS = frozenset({40001, 40014, 42001})


class WeChatApiError(PlatformApiError):
    """WeChat refused a call (``errcode``) or could not be reached (``errcode`` None)."""


class WeChatClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._api = JsonApi(session, base_url, timeout, WeChatApiError)
        self._tokens = TokenCache()

    async def access_token(self, appid: str, secret: str, *, refresh: bool = False) -> str:
        async def fetch() -> tuple[str, int]:
            data = await self._api.request("GET", "cgi-bin/token", {
                "grant_type": "client_credential", "appid": appid, "secret": secret})
            if data.get("errcode", 0) != 0 or not data.get("access_token"):
                raise WeChatApiError(f"token: {data.get('errmsg', 'no token')}",
                                     data.get("errcode"))
            return str(data["access_token"]), int(data.get("expires_in", 7200))

        return await self._tokens.get((appid, secret), fetch, refresh=refresh)

    async def generate_urllink(self, appid: str, secret: str, *, path: str, query: str,
                               expire_days: int) -> str:
        """A URL Link opening ``path?query`` of the mini-program, valid ``expire_days``."""
        body = {"path": path, "query": query, "expire_type": 1,
                "expire_interval": expire_days}
        for attempt in range(2):
            token = await self.access_token(appid, secret, refresh=attempt > 0)
            data = await self._api.request("POST", "wxa/generate_urllink",
                                           {"access_token": token}, body)
            errcode = int(data.get("errcode", 0))
            if errcode == 0 and data.get("url_link"):
                return str(data["url_link"])
            if errcode not in _TOKEN_ERRORS:
                raise WeChatApiError(f"generate_urllink: {data.get('errmsg', 'error')}",
                                     errcode)
        raise WeChatApiError("generate_urllink: the token stayed invalid after a refresh")
