"""The WeChat JS-SDK config that lets a landing page carry the open tag
``wx-open-launch-weapp`` (微信开放标签, a button that opens a mini-program from a web page
inside WeChat).

The merchant's official account (公众号) signs it: its appid and secret are credentials
(``PUT /api/credentials/wechat_official_account``), and the gateway's host must be one of the
account's "JS接口安全域名". Rules, from WeChat's documentation:

* 开放标签说明文档 (https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_Open_Tag.html):
  a page that uses an open tag loads ``jweixin-1.6.0.js`` from ``res.wx.qq.com`` and calls
  ``wx.config`` with the account's ``appId`` and ``openTagList: ['wx-open-launch-weapp']``;
* JS-SDK 说明文档, 附录1 JS-SDK使用权限签名算法
  (https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/JS-SDK.html): the
  ``jsapi_ticket`` comes from ``cgi-bin/ticket/getticket?type=jsapi``, lives 7200 s and
  "必须在自己的服务全局缓存"; ``signature`` is the sha1 of
  ``jsapi_ticket=..&noncestr=..&timestamp=..&url=..`` (fields sorted, raw values, no URL
  escaping), ``url`` being the page's URL "不包含#及其后面部分".

The share link never waits for WeChat: tickets are fetched when the credentials are set and
by ``refresh_due`` before they expire; a page that finds none gets the open tag's fallbacks
(the mini-program code, or how to find the mini-program) and asks for one in the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

import structlog
from cachetools import TTLCache
from jinja2.utils import htmlsafe_json_dumps

from ..store import Credentials, Store
from ..trouble import Trouble
from .client import WeChatApiError, WeChatClient

__all__ = ["PLATFORM", "JsConfig", "JsSdk", "signature", "wx_config_call"]

log = structlog.get_logger("linkloop.wechat")

#: The credentials' platform key: the merchant's official account.
PLATFORM = "wechat_official_account"
# A ticket is used until this long before WeChat expires it, and refreshed from then on.
_EARLY = 300.0
# How long a merchant's credentials (or their absence) are believed without a store read:
# another gateway's change reaches this one within it.
_CREDENTIALS_TTL = 60.0
#: After WeChat refuses a ticket, pages go without the open tag (they fall back) and the
#: next fetch waits this long, doubling with each refusal up to ``_RETRY_MAX``.
_RETRY_FIRST = 2.0
_RETRY_MAX = 300.0


def signature(ticket: str, noncestr: str, timestamp: int, url: str) -> str:
    """JS-SDK 使用权限签名算法: sha1 of the sorted fields, raw, with the URL's fragment cut."""
    page = url.split("#", 1)[0]
    plain = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={page}"
    return hashlib.sha1(plain.encode()).hexdigest()


class JsConfig(NamedTuple):
    """What ``wx.config`` is given on one page."""

    app_id: str
    timestamp: int
    nonce_str: str
    signature: str


def wx_config_call(config: JsConfig) -> str:
    """The page's ``wx.config(...)`` statement: the account's appId, this page's signature,
    and the open tag asked for (an Android WeChat wants some JS API listed as well)."""
    # Escaped for a <script> as Jinja's tojson escapes (no "</script>" can end it early).
    return "wx.config(" + htmlsafe_json_dumps({
        "debug": False, "appId": config.app_id, "timestamp": config.timestamp,
        "nonceStr": config.nonce_str, "signature": config.signature,
        "jsApiList": ["checkJsApi"], "openTagList": ["wx-open-launch-weapp"],
    }, separators=(",", ":")) + ");"


class _Ticket(NamedTuple):
    value: str
    #: When it is no longer used (WeChat's expiry less ``_EARLY``), by the JsSdk's clock.
    good_until: float


class JsSdk:
    def __init__(self, store: Store, client: WeChatClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self._credentials: TTLCache[str, Credentials | None] = TTLCache(
            10_000, _CREDENTIALS_TTL)
        self._tickets: dict[tuple[str, str], _Ticket] = {}
        self._fetching: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._runner: asyncio.Task[None] | None = None
        #: Accounts whose last fetch WeChat refused: (not before, the wait after that).
        #: Without it every WeChat shopper's page asked again, spending the ticket API's
        #: small daily quota and logging a warning a page.
        self._refused: dict[tuple[str, str], tuple[float, float]] = {}
        self._troubles: dict[tuple[str, str], Trouble] = {}

    def start(self, interval: float) -> None:
        """Refresh tickets before they expire, every ``interval`` seconds, until closed."""
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.refresh_due()

        self._runner = asyncio.create_task(run(), name="linkloop-jsapi-tickets")

    async def config(self, merchant_id: str, page_url: str) -> JsConfig | None:
        """The signed config for a page of the merchant's, or None when there is none now
        (no official account, or no ticket yet: one is fetched in the background)."""
        credentials = await self._account(merchant_id)
        if credentials is None:
            return None
        ticket = self._ticket(credentials)
        if ticket is None:
            if not self._waiting((credentials.app_id, credentials.secret)):
                self._fetch_soon(credentials)
            return None
        timestamp = int(self.clock())
        nonce = secrets.token_hex(8)  # 16 characters of [0-9a-f]: any random string will do
        return JsConfig(credentials.app_id, timestamp, nonce,
                        signature(ticket, nonce, timestamp, page_url))

    async def warm(self, merchant_id: str) -> str | None:
        """Read the merchant's official account afresh and fetch its ticket now (the
        credentials were just set); the ticket, or None if WeChat refused."""
        self._credentials.pop(merchant_id, None)
        credentials = await self._account(merchant_id)
        if credentials is None:
            return None
        self._tickets.pop((credentials.app_id, credentials.secret), None)
        self._refused.pop((credentials.app_id, credentials.secret), None)  # asked: now
        return await self._fetch_soon(credentials)

    async def refresh_due(self) -> None:
        """Fetch again every ticket in use that is within ``_EARLY`` of its expiry."""
        now = self.clock()
        for key, ticket in list(self._tickets.items()):
            if ticket.good_until <= now + _EARLY and not self._waiting(key):
                await self._fetch_soon(Credentials("", PLATFORM, key[0], key[1]))

    async def _account(self, merchant_id: str) -> Credentials | None:
        if merchant_id in self._credentials:
            return self._credentials[merchant_id]
        found = await self.store.get_credentials(merchant_id, PLATFORM)
        self._credentials[merchant_id] = found
        return found

    def _ticket(self, credentials: Credentials) -> str | None:
        found = self._tickets.get((credentials.app_id, credentials.secret))
        return found.value if found is not None and found.good_until > self.clock() else None

    def _fetch_soon(self, credentials: Credentials) -> asyncio.Task[str | None]:
        """One fetch per account at a time, however many pages ask."""
        key = (credentials.app_id, credentials.secret)
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key), name=f"jsapi-ticket-{key[0]}")
            self._fetching[key] = task
            task.add_done_callback(lambda _t: self._fetching.pop(key, None))
        return task

    def _waiting(self, key: tuple[str, str]) -> bool:
        """Whether WeChat refused this account's last fetch too recently to ask again."""
        refused = self._refused.get(key)
        return refused is not None and self.clock() < refused[0]

    async def _fetch(self, key: tuple[str, str]) -> str | None:
        trouble = self._troubles.setdefault(key, Trouble(
            log, "wechat.jsapi_ticket_failed", "wechat.jsapi_ticket_back"))
        try:
            ticket, expires_in = await self.client.jsapi_ticket(*key)
        except WeChatApiError as exc:
            wait = min(_RETRY_MAX, 2 * self._refused.get(key, (0.0, _RETRY_FIRST / 2))[1])
            self._refused[key] = (self.clock() + wait, wait)
            trouble.failed(appid=key[0], errcode=exc.errcode, error=str(exc), retry_in=wait)
            return None
        self._refused.pop(key, None)
        trouble.ok(appid=key[0])
        self._tickets[key] = _Ticket(ticket, self.clock() + max(0.0, expires_in - _EARLY))
        log.info("wechat.jsapi_ticket", appid=key[0], expires_in=expires_in)
        return ticket

    async def close(self) -> None:
        tasks = [*self._fetching.values(), *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
