"""Minted mini-program links for share links, without ever making a shopper wait.

The hot path asks ``link(product)``: a cached URL Link when there is one. When there is
none it calls ``want(product)``, which mints one in the background with the merchant's app
credentials, and that click gets the plain-text ``weixin://dl/business`` scheme instead.
Links are cached until shortly before WeChat expires them; a failed mint (no credentials,
an API error, a timeout) is remembered for a minute so WeChat is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from cachetools import TTLCache

from adapters import TargetError, by_platform
from adapters.urls import check_url

from ..store import Product, Store
from .client import WeChatApiError, WeChatClient

__all__ = ["PLATFORM", "MiniProgramLinks"]

log = structlog.get_logger("linkloop.wechat")

PLATFORM = "wechat_miniprogram"
_RETRY_AFTER = 60.0
_MARGIN = 3600.0


class MiniProgramLinks:
    def __init__(self, store: Store, client: WeChatClient, *, expire_days: int) -> None:
        self.store = store
        self.client = client
        self.expire_days = expire_days
        ttl = max(60.0, expire_days * 86400 - _MARGIN)
        # Keyed by code and the product's version: a changed target mints afresh.
        self._links: TTLCache[tuple[str, float], str] = TTLCache(100_000, ttl)
        self._failed: TTLCache[tuple[str, float], bool] = TTLCache(100_000, _RETRY_AFTER)
        self._minting: dict[tuple[str, float], asyncio.Task[None]] = {}

    def link(self, product: Product) -> dict[str, str] | None:
        """``{"wechat_miniprogram": url}`` when a minted link is ready, else None."""
        url = self._links.get((product.code, product.updated_at))
        return {PLATFORM: url} if url else None

    def want(self, product: Product) -> None:
        key = (product.code, product.updated_at)
        if key in self._links or key in self._failed or key in self._minting:
            return
        task = asyncio.create_task(self._mint(key, product), name=f"mint-{product.code}")
        self._minting[key] = task
        task.add_done_callback(lambda _t: self._minting.pop(key, None))

    async def wait(self) -> None:
        """Until every mint under way has finished (tests, shutdown)."""
        while self._minting:
            await asyncio.gather(*self._minting.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._minting.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._minting.values(), return_exceptions=True)

    async def _mint(self, key: tuple[str, float], product: Product) -> None:
        target = product.targets.get(PLATFORM, {})
        try:
            credentials = await self.store.get_credentials(product.merchant_id, PLATFORM)
            if credentials is None or credentials.app_id != target.get("appid"):
                self._failed[key] = True  # nothing to mint with: the plain scheme it is
                return
            url = await self.client.generate_urllink(
                credentials.app_id, credentials.secret, path=target.get("path", ""),
                query=target.get("query", ""), expire_days=self.expire_days)
        except WeChatApiError as exc:
            log.warning("wechat.mint_failed", code=product.code, error=str(exc),
                        errcode=exc.errcode)
            self._failed[key] = True
            return
        except Exception:
            log.exception("wechat.mint_error", code=product.code)
            self._failed[key] = True
            return
        adapter = by_platform(PLATFORM)
        assert adapter is not None
        try:
            # A shopper is sent here: the one URL check, on WeChat's URL Link hosts.
            url = check_url(url, "url_link", adapter.owned_hosts)
        except TargetError as exc:
            log.warning("wechat.mint_refused", code=product.code, error=exc.message)
            self._failed[key] = True
            return
        self._links[key] = url
        log.info("wechat.link_minted", code=product.code)
