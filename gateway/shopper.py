"""The shopper's routes: the share link (the hot path) and the tracked hops after it.

``GET /p/{code}`` never waits on the database when the link is cached: the click goes to the
recorder's memory and the answer is built from the cached product. Every URL a shopper is
sent to comes from a stored, adapter-validated target, never from the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from time import time
from typing import Any

import structlog
from aiohttp import hdrs, web
from multidict import istr

from adapters import by_platform

from . import catalog
from .appkeys import (
    CLOCK,
    DETECTOR,
    ENTRIES,
    IP_HASHER,
    LINKS,
    PAGES,
    PUBLIC_URL,
    RECORDER,
    SETTINGS,
    SHARE_LINK_COUNTS,
    STORE,
    WORKER,
)
from .detect import Detection, Detector
from .errors import error_response, guarded
from .guide import overlay_for
from .ids import is_token, is_visitor_id, new_click_id
from .jsonout import json_response
from .links import CachedLink
from .logs import CLICK_ID
from .miniprogram import NO_CARD, card_context, launch_page, miniprogram_code, page_config
from .pages import Pages, qr_svg
from .resolve import Resolution, hop, resolve
from .sales_window import closed_page, within
from .store import Click, Event, Product
from .tally import REQUESTS, SHARE_ROUTE, TIMED_ROUTES, ShareLinkCounts
from .trouble import Trouble
from .wechat.jssdk import wx_config_call
from .wecom.client import WeComApiError

__all__ = ["CHANNEL_PATTERN", "VISITOR_COOKIE", "cookie_value", "setup_routes"]

log = structlog.get_logger("linkloop.shopper")

VISITOR_COOKIE = "ll_v"
_VISITOR_MAX_AGE = 400 * 24 * 3600  # browsers cap cookies at 400 days anyway
CHANNEL_PATTERN = re.compile(r"[a-z0-9_]{1,32}")


class ShareLink:
    """``GET /p/{code}``, the hot path, with the app's resources looked up once at start-up.

    It reads top to bottom as what happens to a click: the link, the shopper's app, who
    they are, where they go; the click is recorded; then they are answered. A cached link,
    a User-Agent seen before and a resolution worked out before are dict lookups, so the
    common click never waits on storage. Errors are caught here (no middleware wraps this
    route), and tell GET /metrics whether the failed request had counted its click.
    """

    def __init__(self, app: web.Application) -> None:
        self.trust_forwarded = bool(app[SETTINGS]["server.trust_forwarded"])
        secure = "; Secure" if app[PUBLIC_URL].startswith("https://") else ""
        self.cookie_attrs = f"; Max-Age={_VISITOR_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{secure}"
        self.public_url = app[PUBLIC_URL]
        #: Pages and late failures, for GET /metrics (redirects are counted from the clicks).
        self.counts = app[SHARE_LINK_COUNTS] = ShareLinkCounts()
        app.on_startup.append(self._bind)  # runs after cleanup_ctx has opened everything

    async def _bind(self, app: web.Application) -> None:
        self.links = app[LINKS]
        self.detector = app[DETECTOR]
        self.recorder = app[RECORDER]
        self.clock = app[CLOCK]
        self.ip_hashes = app[IP_HASHER]
        self.pages = app[PAGES]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            code = request.match_info["code"]
            cached = self.links.lookup(code) or await self.links.load(code)
            if not cached.live:
                return self._gone(request, cached)
            detection, channel = _detect(request, self.detector)
            click_id = new_click_id()
            visitor, set_cookie = self._visitor(request, click_id)
            ts, day = self.clock.now()
            CLICK_ID.set(click_id)  # aiohttp runs each request in its own task
            resolution, outcome = _destination(cached, detection, ts)
            self.recorder.click(Click(
                click_id, cached.merchant_id, cached.product_id, ts, day, detection.platform,
                detection.source, visitor, self._address_hash(request), detection.bot,
                detection.mobile, detection.os, channel, outcome))
        except Exception as exc:
            return self._failed(request, exc, after_click=False)
        try:  # the click is taken
            if resolution is not None and resolution.redirect is not None:
                response = _redirect(resolution.redirect, set_cookie)
            else:
                response = await self._page(request, cached, detection, resolution, click_id,
                                            ts)
                self.counts.pages[response.status] += 1
                if set_cookie is not None:
                    response.headers[hdrs.SET_COOKIE] = set_cookie
            return response
        except Exception as exc:
            return self._failed(request, exc, after_click=True)

    def _visitor(self, request: web.Request, click_id: str) -> tuple[str, str | None]:
        """(visitor id, the Set-Cookie for a new visitor): a returning visitor keeps the id
        in their cookie; a new one is known by the id of their first click."""
        cookie = cookie_value(request.headers.get(hdrs.COOKIE), VISITOR_COOKIE)
        if cookie and is_visitor_id(cookie):
            return cookie, None
        return click_id, f"{VISITOR_COOKIE}={click_id}{self.cookie_attrs}"

    def _address_hash(self, request: web.Request) -> str:
        """The salted hash of the shopper's address (never the address itself)."""
        address = _forwarded_for(request) if self.trust_forwarded else request.remote
        return self.ip_hashes[address or ""]

    async def _page(self, request: web.Request, cached: CachedLink, detection: Detection,
                    resolution: Resolution | None, click_id: str,
                    now: float) -> web.Response:
        """A click answered with a page, not a redirect: a link preview for a bot
        (``resolution`` None), the sales window's page, or the landing page."""
        if resolution is None:
            if not detection.bot:
                return await _closed(request, cached, now, click_id)
            product = cached.product
            assert product is not None
            return self.pages.render(
                "preview.html", product=product,
                share_url=catalog.share_url(self.public_url, product.code),
                description=f"{product.title} — 点击查看并购买")
        return await _landing(request, cached, detection, resolution, click_id)

    def _failed(self, request: web.Request, exc: Exception, *,
                after_click: bool) -> web.StreamResponse:
        response = error_response(request, exc)
        REQUESTS[SHARE_ROUTE, response.status] += 1
        self.counts.failed_after_click += after_click
        return response

    def _gone(self, request: web.Request, cached: CachedLink) -> web.Response:
        """An unknown or retired link. A retired product's click still counts, as ``gone``:
        marketing sees who keeps following a link they took down."""
        if cached.product is not None:
            detection, channel = _detect(request, self.detector)
            click_id = new_click_id()
            visitor, _ = self._visitor(request, click_id)  # a page that sets no cookie
            ts, day = self.clock.now()
            CLICK_ID.set(click_id)
            self.recorder.click(Click(
                click_id, cached.merchant_id, cached.product_id, ts, day, detection.platform,
                detection.source, visitor, self._address_hash(request), detection.bot,
                detection.mobile, detection.os, channel, "gone"))
            self.counts.gone += 1  # a click taken, answered with no redirect
        response = _link_gone(self.pages, cached.product)
        REQUESTS[SHARE_ROUTE, response.status] += 1
        return response


async def _closed(request: web.Request, cached: CachedLink, now: float,
                  click_id: str) -> web.Response:
    """The "not yet" or "ended" page of a product outside its window, with the way into the
    merchant's WeCom."""
    app = request.app
    product = cached.product
    assert product is not None
    entry = await app[ENTRIES].get(product.merchant_id)
    return closed_page(app[PAGES], app[CLOCK], product, now,
                       f"/e/{product.code}?c={click_id}" if entry else None)


async def _landing(request: web.Request, cached: CachedLink, detection: Detection,
                   resolution: Resolution, click_id: str) -> web.Response:
    """The page listing the product's storefronts (through ``/o/``) and the WeCom entry; or
    the launch page of a mini-program's scheme.

    A shopper inside WeChat gets this page on every click (WeChat blocks most stores, and
    opens a mini-program only from its card), so it is rendered once per product version,
    detection, entry and official account (``KeptPage``), and each click only splices
    in its id and, on a page with the open tag, the ``wx.config`` signed for its URL. The
    launch page is kept the same way, per product version and detection.
    """
    app = request.app
    product = cached.product
    assert product is not None
    share_url = catalog.share_url(app[PUBLIC_URL], product.code)
    if resolution.launch is not None:  # nothing on it is the click's own
        launch: KeptPage | None = cached.memo.get((_LAUNCH, detection))
        if launch is None:
            front = next(f for f in resolution.options if f.platform == resolution.target)
            launch = cached.memo[(_LAUNCH, detection)] = KeptPage(launch_page(
                request, product, front, resolution.launch, detection, share_url,
                others=len(resolution.options) > 1))
        return launch.response(click_id)
    entry = await app[ENTRIES].get(product.merchant_id)
    config = await page_config(request, cached) if resolution.card is not None else None
    key = (_LANDING, detection, entry is not None, config.app_id if config else None)
    page: KeptPage | None = cached.memo.get(key)
    if page is None:
        mini = NO_CARD if resolution.card is None else card_context(
            app, cached, resolution.card, signed=config is not None)
        page = cached.memo[key] = KeptPage(_render_landing(
            app[PAGES], cached, detection, resolution, KeptPage.CLICK_ID, share_url,
            entry is not None, mini))
    return page.response(click_id, wx_config_call(config) if config else None)


def _render_landing(pages: Pages, cached: CachedLink, detection: Detection,
                    resolution: Resolution, click_id: str, share_url: str, entry: bool,
                    mini: Mapping[str, Any]) -> web.Response:
    product = cached.product
    assert product is not None
    hops = {front.platform: f"/o/{product.code}/{front.platform}?c={click_id}"
            for front in (*resolution.options, *resolution.blocked)}
    return pages.render(
        "landing.html", product=product, options=resolution.options,
        blocked=resolution.blocked, guide=resolution.guide, hop_urls=hops,
        entry_url=f"/e/{product.code}?c={click_id}" if entry else None,
        phone_only=resolution.phone_only,
        qr_svg=_share_qr(cached, share_url) if resolution.qr else None, share_url=share_url,
        overlay=overlay_for(detection.platform, detection.os)
        if resolution.guide or resolution.card is not None else None,
        tryable=resolution.tryable, wx_config=KeptPage.WX_CONFIG,
        # Where the open tag reports a launch (open_tag_launched): the card's own hop.
        card_open_url=f"/o/{product.code}/{resolution.card.platform}?c={click_id}"
        if resolution.card is not None else None,
        **mini,
    )


# The memo keys' first items for landing and launch pages: equal to no other key.
_LANDING, _LAUNCH = object(), object()


class KeptPage:
    """A page rendered once, kept as the bytes around its click ids (if it has any)."""

    #: What the page is rendered with in place of the click id, and of the open tag's
    #: ``wx.config`` statement. A NUL can't come from a merchant's text (input checks
    #: refuse control characters) and HTML escaping leaves it.
    CLICK_ID = "\x00click-id\x00"
    WX_CONFIG = "\x00wx-config\x00"
    _WX_CONFIG = WX_CONFIG.encode()

    __slots__ = ("headers", "parts")

    def __init__(self, rendered: web.Response) -> None:
        assert isinstance(rendered.body, bytes)
        self.parts = rendered.body.split(self.CLICK_ID.encode())
        self.headers = tuple(rendered.headers.items())

    def response(self, click_id: str, wx_config: str | None = None) -> web.Response:
        body = click_id.encode().join(self.parts)
        if wx_config is not None:
            body = body.replace(self._WX_CONFIG, wx_config.encode(), 1)
        return web.Response(body=body, headers=self.headers)


# What every redirect carries: never cached (each click counts), no referrer leaked onward.
_NO_STORE = ((hdrs.CACHE_CONTROL, "no-store"), (istr("Referrer-Policy"), "no-referrer"))


def _destination(cached: CachedLink, detection: Detection, now: float,
                 ) -> tuple[Resolution | None, str]:
    """Where this click goes and its outcome: None for a page with no storefront on it, a
    bot's link preview or a product outside its sales window (whose click still counts)."""
    if detection.bot:  # a link preview: the product's title and image, no redirect
        return None, "preview"
    if cached.window is not None and not within(cached.window, now):
        return None, "gone"  # before the sale or after it: a page that says so
    resolution = _resolution(cached, detection)
    return resolution, resolution.outcome


def _resolution(cached: CachedLink, detection: Detection) -> Resolution:
    """Where this shopper goes, worked out once per product version (and minted links) and
    detection, and kept with the cached link.

    Links minted for the product (a WeChat URL Link...) came with it, minted when it was
    saved: nothing here waits for WeChat or asks it for anything."""
    # The Detection itself is the key: the detector keeps one per User-Agent, shared by
    # every request with that header.
    found: Resolution | None = cached.memo.get(detection)
    if found is None:
        assert cached.product is not None
        found = cached.memo[detection] = resolve(detection, cached.product.targets,
                                                 links=cached.minted)
    return found


_QR = object()  # the memo key of the landing page's QR code: equal to no other key


def _share_qr(cached: CachedLink, share_url: str) -> str:
    """The share link's QR code for a desktop landing page, drawn once per product version.

    Drawing it took ~3 ms (segno tries all eight masks), nine tenths of a desktop landing
    page: one browser reloading could hold the event loop that every redirect shares. It
    costs ~1.5 KB per link opened on a desktop, as long as the link stays cached.
    """
    found: str | None = cached.memo.get(_QR)
    if found is None:
        found = cached.memo[_QR] = qr_svg(share_url)
    return found


def _forwarded_for(request: web.Request) -> str | None:
    """The client address our own proxy saw (``server.trust_forwarded``), else the peer's."""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return request.remote


def _detect(request: web.Request, detector: Detector) -> tuple[Detection, str | None]:
    """The shopper's platform and the channel tag, if the link carried a valid one. Nearly
    every click comes from an app its User-Agent names: one look-up in the detector's
    cache decides it (Detector.request); the channel and the Referer count only past it."""
    # Most share links carry no query string: don't build the query MultiDict for nothing.
    channel = request.query.get("ch") if request.query_string else None
    if channel is not None:
        # Tags are typed by hand into links and posters (?ch=Spring_Live); channel names are
        # lowercase, so a capital must not drop the click into "no channel". ASCII only:
        # str.lower() makes "k" of the Kelvin sign.
        lowered = channel.lower() if channel.isascii() else ""
        channel = lowered if CHANNEL_PATTERN.fullmatch(lowered) else None
    headers = request.headers
    detection = detector.request(headers.get("User-Agent", ""), channel, headers.get("Referer"))
    if request.method == hdrs.METH_HEAD:
        # No one taps a link with HEAD (aiohttp routes it to every GET handler): a link
        # checker, an unfurler or a mail scanner, whatever User-Agent it claims. Counted as
        # bots are, in bot_clicks only, and no open or entry of a person's.
        detection = detection._replace(bot=True)
    return detection, channel


def cookie_value(header: str | None, name: str) -> str | None:
    """One cookie's value from a Cookie header, without parsing them all.

    ``request.cookies`` builds a SimpleCookie of every cookie the browser sends; the hot
    path needs one, and our values are plain tokens (no quoting to undo).
    """
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _link_gone(pages: Pages, product: Product | None) -> web.Response:
    """The page a shopper sees for an unknown or a retired link."""
    if product is None:
        return pages.message(404, "link_not_found", "链接不存在",
                             "这个链接不存在，请检查是否完整复制。")
    return pages.message(410, "link_retired", "商品已下架", "这个商品链接已失效。")


async def _cached(request: web.Request, app: web.Application) -> CachedLink | web.Response:
    """The link's cache entry (product and minted links), or the page for a gone link."""
    code = request.match_info["code"]
    links = app[LINKS]
    cached = links.lookup(code) or await links.load(code)
    if not cached.live:
        return _link_gone(app[PAGES], cached.product)
    return cached


async def _product(request: web.Request, app: web.Application) -> Product | web.Response:
    """The link's product, or the page a shopper sees for an unknown or retired link."""
    found = await _cached(request, app)
    if isinstance(found, web.Response):
        return found
    assert found.product is not None
    return found.product


async def storefront_hop(request: web.Request) -> web.StreamResponse:
    """``/o/{code}/{platform}``: count a storefront open, then go to that stored target."""
    app = request.app
    cached = await _cached(request, app)
    if isinstance(cached, web.Response):
        return cached
    product = cached.product
    assert product is not None
    now = time()
    if not within((product.valid_from, product.valid_until), now):
        return closed_page(app[PAGES], app[CLOCK], product, now, None)
    platform = request.match_info["platform"]
    target = product.targets.get(platform)
    adapter = by_platform(platform)
    if target is None or adapter is None:
        return app[PAGES].message(404, "storefront_not_found", "链接不存在",
                                          "这个商品在该平台没有店铺。")
    detection, _ = _detect(request, app[DETECTOR])
    front = adapter.storefront(dict(target))
    way = hop(detection, front, links=cached.minted)
    share_url = catalog.share_url(app[PUBLIC_URL], product.code)
    if way is None:
        # Nothing this app can open: the guide out of it, and the share token to copy.
        return app[PAGES].render(
            "landing.html", product=product, options=(), blocked=(front,), guide=True,
            hop_urls={}, entry_url=None, phone_only=(), qr_svg=None,
            share_url=share_url, overlay=overlay_for(detection.platform, detection.os),
            tryable=(), **NO_CARD)
    if way.kind == "page":
        # Inside WeChat with no URL Link: the page with the mini-program's card.
        resolution = _resolution(cached, detection)
        click = request.query.get("c")
        return await _landing(request, cached, detection, resolution,
                              click if click and is_token(click) else new_click_id())
    _count_open(request, product, detection, platform)
    assert way.url is not None
    if way.kind == "launch":
        return launch_page(request, product, front, way.url, detection, share_url,
                           others=len(product.targets) > 1)
    return _redirect(way.url)


#: The one platform an open tag (wx-open-launch-weapp) opens.
_OPEN_TAG_OPENS = "wechat_miniprogram"


async def open_tag_launched(request: web.Request) -> web.StreamResponse:
    """``POST /o/{code}/{platform}``: the landing page's open tag opened that mini-program.

    WeChat opens it itself, never through a hop of ours, and fires the tag's ``launch``
    event once the shopper has confirmed; the page then reports it here, and it counts as
    the hop would have (204, nothing to show).
    """
    app = request.app
    product = await _product(request, app)
    if isinstance(product, web.Response):
        return product
    now = time()
    if not within((product.valid_from, product.valid_until), now):
        return closed_page(app[PAGES], app[CLOCK], product, now, None)
    platform = request.match_info["platform"]
    # Only what an open tag opens: a WeChat mini-program the product names by its appid.
    if platform != _OPEN_TAG_OPENS or not product.targets.get(platform, {}).get("appid"):
        return app[PAGES].message(404, "storefront_not_found", "链接不存在",
                                  "这个商品在该平台没有店铺。")
    _count_open(request, product, _detect(request, app[DETECTOR])[0], platform)
    return web.Response(status=204, headers=_NO_STORE)


def _count_open(request: web.Request, product: Product, detection: Detection,
                platform: str) -> None:
    """A storefront open of ``platform``, under the click in ``?c=`` (a bot's: none)."""
    if detection.bot:
        return
    app = request.app
    click_id = request.query.get("c")
    ts, day = app[CLOCK].now()
    app[RECORDER].event(Event(
        id=new_click_id(), merchant_id=product.merchant_id, product_id=product.id,
        kind="storefront_open", platform=detection.platform, ts=ts, day=day,
        click_id=click_id if click_id and is_token(click_id) else None, target=platform,
    ))


def _redirect(url: str, set_cookie: str | None = None) -> web.Response:
    """The 302 of the share link and of every hop, with the visitor cookie when it is new."""
    # Header pairs, not a dict: Response copies them into its own CIMultiDict anyway.
    if set_cookie is None:
        return web.Response(status=302, headers=((hdrs.LOCATION, url), *_NO_STORE))
    return web.Response(status=302, headers=(
        (hdrs.LOCATION, url), *_NO_STORE, (hdrs.SET_COOKIE, set_cookie)))


async def entry_hop(request: web.Request) -> web.StreamResponse:
    """``/e/{code}``: count an entry, then into the merchant's WeCom for this platform."""
    app = request.app
    found = await _product(request, app)
    if isinstance(found, web.Response):
        return found
    product = found
    pages = app[PAGES]
    directory = app[ENTRIES]
    entry = await directory.get(product.merchant_id)
    if entry is None:
        return pages.message(404, "entry_not_configured", "暂未开放",
                             "商家还没有设置企业微信入口。")
    detection, _ = _detect(request, app[DETECTOR])
    raw_click = request.query.get("c")
    click_id = raw_click if raw_click and is_token(raw_click) else None
    if not detection.bot:
        ts, day = app[CLOCK].now()
        app[RECORDER].event(Event(
            id=new_click_id(), merchant_id=product.merchant_id, product_id=product.id,
            kind="entry", platform=detection.platform, ts=ts, day=day, click_id=click_id))
    if entry.kind == "acquisition_link":
        url = directory.acquisition_url(entry, detection.platform, click_id)
        if detection.mobile and not detection.bot:
            return _redirect(url)
        return pages.render("entry.html", product=product, image_url=None,
                            qr_svg=qr_svg(url), link=url, scan=True)
    if entry.kind == "static":
        return pages.render("entry.html", product=product, image_url=entry.config["qr_url"],
                            qr_svg=None, link=None, scan=not detection.mobile)
    try:
        way = await directory.way(entry, detection.platform)
    except WeComApiError:  # logged by the directory, once while it lasts
        return pages.message(503, "entry_unavailable", "请稍后再试",
                             "企业微信暂时无法连接，请稍后再试。")
    return pages.render("entry.html", product=product, image_url=way.qr_code, qr_svg=None,
                        link=None, scan=not detection.mobile)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


class Readiness:
    """``GET /readyz``: 200 when clicks are made durable (``storage``: ``ok``, or
    ``journaling`` while storage refuses writes and the journal takes them), 503 when
    storage is ``down`` or neither it nor the journal takes clicks (``failing``). A probe
    asks every few seconds: storage away is logged when it goes and when it is back, not
    once a probe (trouble.py)."""

    def __init__(self) -> None:
        self.storage = Trouble(log, "readyz.storage_unavailable", "readyz.storage_back")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when storage answers and clicks can be made durable (written, or
        journaled); the recorder's counters say whether clicks are flowing, and how many
        were dropped."""
        recorder = request.app[RECORDER]
        body = {"worker": request.app[WORKER], "pending": recorder.pending,
                "written": recorder.written,
                "journaled": recorder.journaled, "overflowed": recorder.overflowed,
                "dropped": recorder.dropped,
                "journal": "ok" if recorder.journal_ok else "failing"}
        try:
            await request.app[STORE].ping()  # within storage.timeout_seconds
        except Exception as exc:
            self.storage.failed(error=str(exc))
            return json_response({"status": "unavailable", "storage": "down", **body},
                                 status=503)
        self.storage.ok()
        if not recorder.durable:  # neither storage nor the journal takes clicks: held in memory
            return json_response({"status": "unavailable", "storage": "failing", **body},
                                 status=503)
        if not recorder.storage_ok:
            # Storage answers a ping but refuses the clicks (a table locked, a read-only
            # file, a writer that cannot start): ready, for the journal keeps them, but not
            # "ok", which hid an outage of writes behind a working read.
            return json_response({"status": "ready", "storage": "journaling", **body})
        return json_response({"status": "ready", "storage": "ok", **body})


def setup_routes(app: web.Application) -> None:
    share = app.router.add_get("/p/{code}", ShareLink(app).handle, name="share")  # guards itself
    TIMED_ROUTES.add(share)  # its latency histogram, for GET /metrics
    app.router.add_get("/o/{code}/{platform}", guarded(storefront_hop), name="storefront")
    app.router.add_post("/o/{code}/{platform}", guarded(open_tag_launched))
    app.router.add_get("/p/{code}/miniprogram-code", guarded(miniprogram_code))
    app.router.add_get("/e/{code}", guarded(entry_hop), name="entry")
    app.router.add_get("/healthz", guarded(healthz))
    app.router.add_get("/readyz", guarded(Readiness().readyz))
