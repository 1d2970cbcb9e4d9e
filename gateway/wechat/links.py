"""WeChat mini-program links minted before anyone waits for them.

With the merchant's mini-program credentials (``PUT /api/credentials/wechat_miniprogram``),
every product with a ``wechat_miniprogram`` target gets, when it is created or its target
changes (``product_saved``), or when the credentials arrive (``backfill``):

* a URL Link (``https://wxaurl.cn/...``): what a shopper inside WeChat is sent to;
* an encrypted scheme (``weixin://dl/business/?t=...``): what a phone outside WeChat is
  handed (it opens any published page; the plain-text one only declared pages);
* the mini-program code (``getwxacodeunlimit``), fetched once and kept: what a shopper
  inside WeChat long-presses when there is no URL Link.

Each is stored (``minted_links``), so every gateway serves it and a restart loses nothing;
the link cache reads it with the product, so the share link never calls WeChat. URL Links
and schemes live at most 30 days ("最长间隔天数为30天", 获取加密URLLink); the renewer
(``run``) mints them again ``wechat.link_renew_days`` before they expire, and retries a
failed mint with a growing backoff. WeChat's daily quota (errcode 45009: "每天生成 URL Scheme
和 URL Link 总数量上限为50万") pauses that mini-program's mints until the next day in
Beijing, counts ``quota_exhausted`` and logs ``wechat.quota_exhausted`` for the merchant
(there is no ``/api/alerts`` yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from adapters import TargetError
from adapters.wechat_miniprogram import WeChatMiniProgram

from ..links import LinkCache
from ..store import Credentials, MintedLink, Product, Store
from ..store.base import NEVER, MintKind
from .client import BUSY_ERRORS, QUOTA_ERRORS, WeChatApiError, WeChatClient

__all__ = ["CODE_KEY", "KINDS", "PLATFORM", "MiniProgramLinks", "minted_links"]

log = structlog.get_logger("linkloop.wechat")

PLATFORM = "wechat_miniprogram"
KINDS: tuple[MintKind, ...] = ("url_link", "scheme", "wxacode")
#: The key of the mini-program code's token among a product's minted links.
CODE_KEY = PLATFORM + ":code"
# How each kind appears in the links the resolver reads (gateway/resolve.py).
_LINK_KEYS: dict[str, str] = {"url_link": PLATFORM, "scheme": PLATFORM + ":scheme",
                              "wxacode": CODE_KEY}
# A failed mint is tried again after 1, 2, 4 ... minutes, at most every 6 hours.
_BACKOFF_FIRST = 60.0
_BACKOFF_MAX = 6 * 3600.0
# A claimed row is the claimer's for this long (a mint that died is retried after it).
_LEASE = 300.0
_BATCH = 50
# WeChat's daily quotas start again at midnight in Beijing.
_BEIJING = ZoneInfo("Asia/Shanghai")


def fingerprint(target: Mapping[str, str], kind: str, code: str) -> str:
    """What a kind is minted from: a change to any of it mints afresh."""
    if kind == "wxacode":
        parts = [target.get("appid", ""), target.get("path", ""),
                 WeChatMiniProgram.code_scene(dict(target), code) or ""]
    else:
        parts = [target.get("appid", ""), target.get("path", ""), target.get("query", "")]
    return "\n".join(parts)


async def minted_links(store: Store, codes: Sequence[str]) -> dict[str, dict[str, str]]:
    """code -> the links the resolver reads for it (``LinkCache``'s loader)."""
    found = await store.minted_values(codes, time.time())
    return {code: {_LINK_KEYS[kind]: value for kind, value in values.items()}
            for code, values in found.items()}


def _next_beijing_midnight(now: float) -> float:
    local = datetime.fromtimestamp(now, _BEIJING)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(),
                            _BEIJING).timestamp()


class MiniProgramLinks:
    def __init__(self, store: Store, client: WeChatClient, links: LinkCache, *,
                 expire_days: int, renew_days: float, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.client = client
        self.links = links
        self.expire_days = max(1, min(30, expire_days))
        # Renew this long before expiry (at most half the lifetime, for short lifetimes).
        self.renew_before = min(renew_days * 86400.0, self.expire_days * 86400.0 / 2)
        self.interval = interval
        self.clock = clock
        #: What happened, for an operator: minted, failed, quota_exhausted, renewed.
        self.counts: Counter[str] = Counter()
        # appid -> when its daily quota comes back.
        self._quota_until: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    # --- when products and credentials change -------------------------------------------------
    async def product_saved(self, product: Product, *, wait: float | None = None) -> None:
        """Mint what the product's mini-program target lacks (waiting at most ``wait``
        seconds, the rest finishing in the background), or drop what it no longer needs."""
        task = self._spawn(self._product(product), f"mint-{product.code}")
        if wait is not None:
            await asyncio.wait({task}, timeout=wait)

    def backfill(self, merchant_id: str) -> None:
        """Credentials arrived or changed: mint for every product of the merchant."""
        self._spawn(self._backfill(merchant_id), f"backfill-{merchant_id}")

    async def _backfill(self, merchant_id: str) -> None:
        after = 0
        while True:
            page = await self.store.list_products(merchant_id, limit=100, after_id=after)
            for product in page:
                if not product.retired:
                    await self._product(product)
            if len(page) < 100:
                return
            after = page[-1].id

    async def _product(self, product: Product) -> None:
        target = product.targets.get(PLATFORM)
        have = {m.kind: m for m in await self.store.minted(product.merchant_id, product.code)}
        credentials = await self._credentials(product)
        if target is None or credentials is None:
            if have:  # links minted for a target that is gone, or with other credentials
                await self.store.forget_minted(product.merchant_id, product.code)
                self.links.forget(product.code)
            return
        wanted = [kind for kind in KINDS
                  if (old := have.get(kind)) is None or old.value is None
                  or old.fingerprint != fingerprint(target, kind, product.code)]
        if kind_jobs := [self._mint(product, credentials, kind, have.get(kind))
                         for kind in wanted]:
            await asyncio.gather(*kind_jobs)

    async def _credentials(self, product: Product) -> Credentials | None:
        target = product.targets.get(PLATFORM, {})
        credentials = await self.store.get_credentials(product.merchant_id, PLATFORM)
        if credentials is None or credentials.app_id != target.get("appid"):
            return None  # nothing to mint with: the plain-text scheme and the help page
        return credentials

    # --- one mint -------------------------------------------------------------------------------
    async def _mint(self, product: Product, credentials: Credentials, kind: MintKind,
                    previous: MintedLink | None) -> None:
        target = product.targets[PLATFORM]
        now = self.clock()
        print_ = fingerprint(target, kind, product.code)
        if previous is not None and previous.fingerprint != print_:
            previous = None  # minted for another target: nothing of it is worth keeping
        try:
            paused = self._quota_until.get(credentials.app_id, 0.0)
            if kind != "wxacode" and paused > now:
                raise WeChatApiError("daily quota reached earlier today", 45009)
            minted = await self._call(product, credentials, kind, print_, now)
        except WeChatApiError as exc:
            await self._failed(product, credentials, kind, print_, previous, exc, now)
            return
        except Exception as exc:  # never let one product's mint stop the others
            log.exception("wechat.mint_error", code=product.code, kind=kind)
            await self._failed(product, credentials, kind, print_, previous,
                               WeChatApiError(f"{type(exc).__name__}: {exc}"), now)
            return
        await self.store.put_minted(minted)
        self.links.forget(product.code)
        self.counts["renewed" if previous is not None and previous.value else "minted"] += 1
        log.info("wechat.link_minted", code=product.code, kind=kind,
                 merchant=product.merchant_id)

    async def _call(self, product: Product, credentials: Credentials, kind: MintKind,
                    print_: str, now: float) -> MintedLink:
        target = product.targets[PLATFORM]
        path, query = target.get("path", ""), target.get("query", "")
        base = MintedLink(product.merchant_id, product.code, kind, print_, minted_at=now)
        if kind == "wxacode":
            scene = WeChatMiniProgram.code_scene(dict(target), product.code)
            if scene is None:
                raise WeChatApiError("no scene fits the mini-program code's 32 characters")
            _type, image = await self.client.wxacode_unlimited(
                credentials.app_id, credentials.secret, page=path, scene=scene)
            token = hashlib.sha256(image).hexdigest()[:16]
            return replace(base, value=token, image=image, due_at=NEVER)
        if kind == "url_link":
            value = await self.client.generate_urllink(
                credentials.app_id, credentials.secret, path=path, query=query,
                expire_days=self.expire_days)
            try:  # a shopper is sent here: the one URL check, on WeChat's own hosts
                value = WeChatMiniProgram().check_url(value, "url_link", ())
            except TargetError:
                raise WeChatApiError(
                    f"generate_urllink answered {value[:40]!r}, not a link") from None
        else:
            value = await self.client.generate_scheme(
                credentials.app_id, credentials.secret, path=path, query=query,
                expire_days=self.expire_days)
            if WeChatMiniProgram().check_scheme(value) is None:
                raise WeChatApiError(f"generatescheme answered {value[:40]!r}, not a scheme")
        expires_at = now + self.expire_days * 86400.0
        return replace(base, value=value, expires_at=expires_at,
                       due_at=expires_at - self.renew_before)

    async def _failed(self, product: Product, credentials: Credentials, kind: MintKind,
                      print_: str, previous: MintedLink | None, exc: WeChatApiError,
                      now: float) -> None:
        attempts = (previous.attempts if previous is not None else 0) + 1
        if exc.errcode in QUOTA_ERRORS:
            due = _next_beijing_midnight(now) + random.uniform(60, 600)
            if self._quota_until.get(credentials.app_id, 0.0) <= now:
                # Once per mini-program and day: the merchant's alert (no /api/alerts yet).
                self.counts["quota_exhausted"] += 1
                log.warning("wechat.quota_exhausted", merchant=product.merchant_id,
                            appid=credentials.app_id, code=product.code, kind=kind,
                            until=due, error=str(exc))
            self._quota_until[credentials.app_id] = due
        else:
            # Busy or too fast: soon; anything else (an unpublished page, no permission)
            # keeps failing until someone fixes it, so the backoff grows to hours.
            first = _BACKOFF_FIRST / 2 if exc.errcode in BUSY_ERRORS else _BACKOFF_FIRST
            due = now + min(_BACKOFF_MAX, first * 2 ** (attempts - 1)) * random.uniform(0.9, 1.1)
            log.warning("wechat.mint_failed", merchant=product.merchant_id, code=product.code,
                        kind=kind, errcode=exc.errcode, error=str(exc), attempts=attempts,
                        retry_at=due)
        self.counts["failed"] += 1
        # What was minted before stays in use until it expires: a failed renewal loses nothing.
        kept = previous if previous is not None and previous.value else None
        await self.store.put_minted(MintedLink(
            product.merchant_id, product.code, kind, print_,
            value=kept.value if kept else None, image=kept.image if kept else None,
            expires_at=kept.expires_at if kept else 0.0,
            minted_at=kept.minted_at if kept else 0.0, attempts=attempts,
            due_at=min(due, kept.expires_at) if kept and kept.expires_at else due,
            error=f"{exc.errcode}: {exc}" if exc.errcode is not None else str(exc)))

    # --- the renewer ----------------------------------------------------------------------------
    async def run_due(self) -> int:
        """Renew or retry what is due now; how many rows it worked."""
        now = self.clock()
        due = await self.store.claim_due_mints(now, now + _LEASE, _BATCH)
        for row in due:
            product = await self.store.link(row.code)
            credentials = await self._credentials(product) if product is not None else None
            if product is None or credentials is None:  # no target, or nothing to mint with
                await self.store.forget_minted(row.merchant_id, row.code)
                self.links.forget(row.code)
                continue
            previous = next((m for m in await self.store.minted(row.merchant_id, row.code)
                             if m.kind == row.kind), None)
            if product.retired and previous is not None:
                # Nobody follows a retired link: look again tomorrow (it may be restored).
                await self.store.put_minted(replace(previous, due_at=now + 86400.0))
                continue
            await self._mint(product, credentials, row.kind, previous)
        return len(due)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="linkloop-mint-renewer")

    async def _run(self) -> None:
        while True:
            try:
                while await self.run_due() >= _BATCH:
                    pass
            except Exception as exc:  # storage away: try again next round
                log.warning("wechat.renewer_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.interval)

    # --- housekeeping ---------------------------------------------------------------------------
    def _spawn(self, job: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        async def logged() -> None:
            try:
                await job
            except Exception as exc:  # storage away: the renewer tries what is due later
                log.warning("wechat.mint_job_failed", job=name,
                            error=str(exc) or type(exc).__name__)

        task = asyncio.create_task(logged(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Until every mint under way has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
