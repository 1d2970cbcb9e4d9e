"""A small client for WeChat's server API: access tokens, mini-program links and codes, and
the JS-SDK ticket of an official account.

Tokens are cached per app until five minutes before WeChat says they expire; an expired or
invalid token is refreshed once and the call retried. The base URL comes from settings.
Every call and its errcodes, from WeChat's documentation:

* ``cgi-bin/token`` (获取接口调用凭据, https://developers.weixin.qq.com/miniprogram/dev/server/API/mp-access-token/api_getaccesstoken.html);
* ``wxa/generate_urllink`` (获取加密URLLink, https://developers.weixin.qq.com/miniprogram/dev/server/API/qrcode-link/url-link/api_generateurllink.html):
  ``expire_type`` 1 with ``expire_interval`` days, "最长间隔天数为30天";
* ``wxa/generatescheme`` (获取加密scheme码, https://developers.weixin.qq.com/miniprogram/dev/server/API/qrcode-link/url-scheme/api_generatescheme.html):
  the same expiry rules, the answer's ``openlink`` is ``weixin://dl/business/?t=TICKET``;
* ``wxa/getwxacodeunlimit`` (获取不限制的小程序码, https://developers.weixin.qq.com/miniprogram/dev/server/API/qrcode-link/qr-code/api_getunlimitedqrcode.html):
  "如果调用成功，会直接返回图片二进制内容，如果请求失败，会返回 JSON 格式的数据";
* ``cgi-bin/ticket/getticket?type=jsapi`` (JS-SDK 说明文档, 附录1, https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/JS-SDK.html):
  the official account's ``jsapi_ticket``, valid ``expires_in`` (7200) seconds, "调用次数非常
  有限 ... 必须在自己的服务全局缓存".

Quota: "每天生成 URL Scheme（加密+明文） 和 URL Link 的总数量上限为50万" (获取加密 URL Link);
WeChat answers 45009 "reach max api daily quota limit" past it. 44990 is the per-second cap
("生成URL Link频率过快"), -1 "系统繁忙": both worth a retry soon.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..platform_api import JsonApi, PlatformApiError, TokenCache

__all__ = ["BUSY_ERRORS", "QUOTA_ERRORS", "WeChatApiError", "WeChatClient"]

# errcodes that mean "this access token is no good": refresh and retry once.
# 40001 invalid credential, 40014 invalid access_token, 42001 access_token expired.
_TOKEN_ERRORS = frozenset({40001, 40014, 42001})
#: The daily quota is spent: 45009 "reach max api daily quota limit".
QUOTA_ERRORS = frozenset({45009})
#: Worth trying again soon: -1 system busy, 44990 too frequent (per second).
BUSY_ERRORS = frozenset({-1, 44990})


class WeChatApiError(PlatformApiError):
    """WeChat refused a call (``errcode``) or could not be reached (``errcode`` None)."""


class WeChatClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._api = JsonApi(session, base_url, timeout, WeChatApiError)
        self._tokens = TokenCache()

    async def access_token(self, appid: str, secret: str, *, stale: str | None = None) -> str:
        """The app's token; ``stale``: WeChat just refused this one."""
        async def fetch() -> tuple[str, int]:
            data = await self._api.request("GET", "cgi-bin/token", {
                "grant_type": "client_credential", "appid": appid, "secret": secret})
            if data.get("errcode", 0) != 0 or not data.get("access_token"):
                raise WeChatApiError(f"token: {data.get('errmsg', 'no token')}",
                                     data.get("errcode"))
            return (self._api.text("cgi-bin/token", data, "access_token"),
                    self._api.seconds("cgi-bin/token", data, "expires_in", 7200))

        return await self._tokens.get((appid, secret), fetch, stale=stale)

    async def _call(self, appid: str, secret: str, method: str, path: str, answer: str,
                    body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> dict[str, Any]:
        """A call with the app's token whose answer must carry ``answer``; a token WeChat
        calls expired or invalid is refreshed once."""
        token = None
        for _attempt in range(2):
            token = await self.access_token(appid, secret, stale=token)
            data = await self._api.request(method, path,
                                           {**(params or {}), "access_token": token}, body)
            errcode = int(data.get("errcode", 0) or 0)
            if errcode == 0 and data.get(answer):
                return data
            if errcode not in _TOKEN_ERRORS:
                raise WeChatApiError(f"{path}: {data.get('errmsg', 'error')}", errcode)
        raise WeChatApiError(f"{path}: the token stayed invalid after a refresh", 42001)

    async def generate_urllink(self, appid: str, secret: str, *, path: str, query: str,
                               expire_days: int) -> str:
        """A URL Link opening ``path?query`` of the mini-program, valid ``expire_days``."""
        data = await self._call(appid, secret, "POST", "wxa/generate_urllink", "url_link", {
            "path": path, "query": query, "expire_type": 1, "expire_interval": expire_days})
        return self._api.text("wxa/generate_urllink", data, "url_link")

    async def generate_scheme(self, appid: str, secret: str, *, path: str, query: str,
                              expire_days: int) -> str:
        """An encrypted URL Scheme opening ``path?query``, valid ``expire_days``."""
        data = await self._call(appid, secret, "POST", "wxa/generatescheme", "openlink", {
            "jump_wxa": {"path": path, "query": query}, "expire_type": 1,
            "expire_interval": expire_days})
        return self._api.text("wxa/generatescheme", data, "openlink")

    async def wxacode_unlimited(self, appid: str, secret: str, *, page: str,
                                scene: str) -> tuple[str, bytes]:
        """The mini-program code of ``page`` carrying ``scene``: (content type, image)."""
        body = {"scene": scene, "page": page}
        token = None
        for _attempt in range(2):
            token = await self.access_token(appid, secret, stale=token)
            content_type, raw = await self._api.fetch(
                "POST", "wxa/getwxacodeunlimit", {"access_token": token}, body)
            if content_type.startswith("image/") and raw:
                return content_type, raw
            data = self._api.json_object("wxa/getwxacodeunlimit", raw)
            errcode = int(data.get("errcode", 0) or 0)
            if errcode not in _TOKEN_ERRORS:
                raise WeChatApiError(f"wxa/getwxacodeunlimit: {data.get('errmsg', 'no image')}",
                                     errcode or None)
        raise WeChatApiError("wxa/getwxacodeunlimit: the token stayed invalid after a refresh",
                             42001)

    async def jsapi_ticket(self, appid: str, secret: str) -> tuple[str, int]:
        """The official account's JS-SDK ticket and how long it lives (seconds)."""
        data = await self._call(appid, secret, "GET", "cgi-bin/ticket/getticket", "ticket",
                                params={"type": "jsapi"})
        return (self._api.text("cgi-bin/ticket/getticket", data, "ticket"),
                self._api.seconds("cgi-bin/ticket/getticket", data, "expires_in", 7200))
