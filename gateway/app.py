"""The app factory: every resource (keyed in ``appkeys``) opened and closed in cleanup_ctx.

Nothing is built at import time; ``create_app(settings)`` wires the routes, and the
resources come to life when the app starts and go (recorder first, so every click is
written before storage closes) when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from .appkeys import (
    CALLBACKS,
    CLOCK,
    DETECTOR,
    ENTRIES,
    IP_HASHER,
    JSSDK,
    LINKS,
    MINIPROGRAM_LINKS,
    PAGES,
    PUBLIC_URL,
    RECORDER,
    SETTINGS,
    STORE,
    TOKENS,
    WORKER,
)
from .auth import TokenService
from .clicklog import ClickLog
from .clock import DayClock
from .detect import Detector
from .errors import add_fallback_routes
from .keys import auth_secret, ip_salt
from .links import LinkCache
from .metrics import metrics_ctx
from .pages import Pages
from .privacy import IpHasher
from .recorder import Journal, Recorder
from .retention import prune_daily
from .settings import Settings
from .store import open_store
from .writer import WriterProcess

__all__ = ["create_app", "public_url"]

log = structlog.get_logger("linkloop.app")


def public_url(settings: Settings) -> str:
    url = str(settings["server.public_url"]).rstrip("/")
    return url or f"http://{settings['server.host']}:{settings['server.port']}"


async def _storage(app: web.Application) -> AsyncIterator[None]:
    from .wechat.links import minted_links

    store = await open_store(app[SETTINGS])
    app[STORE] = store
    links = LinkCache(store, ttl=app[SETTINGS]["cache.link_ttl_seconds"],
                      max_entries=app[SETTINGS]["cache.link_max_entries"],
                      minted_loader=functools.partial(minted_links, store))
    app[LINKS] = links
    warmed = await links.warm()
    log.info("links.warmed", links=warmed)
    # Everything made so far lives as long as the process: keep it out of every later GC
    # pass, or a full collection walks the whole link cache in the middle of a request.
    gc.collect()
    gc.freeze()
    # Other instances' product changes reach this cache within a moment (PostgreSQL).
    watcher = asyncio.create_task(store.watch_links(links.forget), name="linkloop-links")
    yield
    await links.close()
    watcher.cancel()
    # A watcher that failed must not keep storage from closing.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watcher
    await store.close()


async def _recorder(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # A child process writes the clicks, so that storage work never takes the interpreter
    # lock from the requests (gateway/writer.py says why); a thread when turned off.
    writer = WriterProcess(settings) if settings["recorder.writer_process"] else None
    recorder = Recorder(
        writer or app[STORE], Journal(settings.data_dir / "journal", owner=f"w{app[WORKER]}"),
        queue_size=settings["recorder.queue_size"],
        hold_size=settings["recorder.hold_size"],
        flush_interval=settings["recorder.flush_interval_ms"] / 1000,
        batch_size=settings["recorder.batch_size"],
        retry_max=settings["recorder.retry_max_seconds"],
        clicklog=ClickLog(settings.data_dir / "clicklog", owner=f"w{app[WORKER]}"),
    )
    app[RECORDER] = recorder
    recorder.start()
    yield
    await recorder.close()
    if writer is not None:
        await writer.close()


async def _platform_apis(app: web.Application) -> AsyncIterator[None]:
    """WeChat and WeCom, called through one shared HTTP session."""
    from .wechat.client import WeChatClient
    from .wechat.jssdk import JsSdk
    from .wechat.links import MiniProgramLinks
    from .wecom.callback import CallbackWorker
    from .wecom.client import WeComClient
    from .wecom.entry import EntryDirectory
    from .wecom.state import StateSigner

    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        wechat = WeChatClient(session, settings["wechat.api_base"],
                              settings["wechat.timeout_seconds"])
        upkeep = settings["wechat.upkeep_interval_seconds"]
        minted = app[MINIPROGRAM_LINKS] = MiniProgramLinks(
            app[STORE], wechat, app[LINKS], expire_days=settings["wechat.link_expire_days"],
            renew_days=settings["wechat.link_renew_days"], interval=upkeep)
        minted.start()  # renews what is due; mints retried after a failure
        jssdk = app[JSSDK] = JsSdk(app[STORE], wechat)
        jssdk.start(upkeep)
        wecom = WeComClient(session, settings["wecom.api_base"],
                            settings["wecom.timeout_seconds"])
        signer = StateSigner(auth_secret(settings))
        app[ENTRIES] = EntryDirectory(app[STORE], wecom, signer)
        worker = CallbackWorker(app[STORE], app[RECORDER], wecom, signer, app[CLOCK])
        app[CALLBACKS] = worker
        worker.start()  # picks up callbacks stored but not yet worked before a restart
        yield
        await worker.close()
        await minted.close()
        await jssdk.close()


async def _secrets(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[TOKENS] = TokenService(auth_secret(settings), settings["auth.audience"])
    app[IP_HASHER] = IpHasher(ip_salt(settings))
    yield


def create_app(settings: Settings, *, worker: int = 0) -> web.Application:
    from . import alerts, api, api_console, console, dashboard, metrics, openapi, shopper
    from .wecom import callback, entry

    # No middleware: each route catches its own errors (errors.guarded), so the share
    # link, the hot path, runs with no wrapper around it.
    app = web.Application(client_max_size=settings["server.max_body_bytes"])
    app[SETTINGS] = settings
    app[WORKER] = worker
    app[PUBLIC_URL] = public_url(settings)
    app[CLOCK] = DayClock(settings["stats.timezone"])
    app[DETECTOR] = Detector()
    app[PAGES] = Pages()
    app.cleanup_ctx.extend([metrics_ctx, _secrets, _storage, _recorder, _platform_apis,
                            prune_daily])
    shopper.setup_routes(app)
    api_console.setup_routes(app)  # before api: its fixed paths before /api/products/{id}
    api.setup_routes(app)
    alerts.setup_routes(app)
    entry.setup_routes(app)
    callback.setup_routes(app)
    console.setup_routes(app)  # before the dashboard's /dashboard/products/{id}
    dashboard.setup_routes(app)
    metrics.setup_routes(app)
    openapi.setup_routes(app)
    add_fallback_routes(app)  # last: our 404 and 405 for whatever no route above takes
    return app
