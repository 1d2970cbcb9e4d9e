"""The dashboard's pages: login, overview, products, one product, CSV, QR codes.

Every figure comes from ``gateway.stats.run_stats`` with a ``StatsQuery`` parsed by
``parse_stats_query``: the very rows ``GET /api/stats`` answers for the same filters, never
a second computation. Every read is scoped by the session's merchant. Pages are rendered on
the server (jinja2, autoescaped), with charts as inline SVG and no script at all.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import segno
import structlog
from aiohttp import web
from markupsafe import Markup

from adapters import by_platform, platform_ids

from ..alerts import recent_alerts
from ..appkeys import CLOCK, IP_HASHER, PAGES, PUBLIC_URL, SETTINGS, STORE
from ..catalog import share_url
from ..errors import guarded
from ..inputs import parse_uint, read_form
from ..pages import qr_svg
from ..stats import (
    CHANNEL_PATTERN,
    RATES,
    StatsQuery,
    StatsQueryError,
    parse_stats_query,
    rows_csv,
    run_stats,
    run_total,
    unrounded_rate,
    with_funnel,
)
from ..store import METRICS, Product, Store, StoreUnavailable
from ..store.sketch import EXACT_MAX
from ..users import LOCK_SECONDS, MAX_FAILURES, authenticate
from . import charts
from .session import (
    COOKIE_PATH,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    Session,
    SessionService,
    client_address,
    csrf_matches,
    new_csrf_token,
    safe_next,
    same_origin,
)

__all__ = ["LOGIN_SLOTS", "SESSIONS", "current_session", "error_page", "render",
           "require_session", "setup_routes", "storage_guarded"]

log = structlog.get_logger("linkloop.dashboard")

SESSIONS = web.AppKey("dashboard_sessions", SessionService)
#: At most this many password checks at once (each takes 16 MiB and ~50 ms of a core).
LOGIN_SLOTS = web.AppKey("dashboard_login_slots", asyncio.Semaphore)
_STATIC: web.AppKey[dict[str, tuple[bytes, str, str]]] = web.AppKey("dashboard_static")
_CONCURRENT_LOGINS = 4

FILTER_KEYS = ("from", "to", "product", "platform", "channel")
PRODUCTS_PER_PAGE = 50
_MAX_PRODUCTS = 2000
_FIELD_NAMES = {"from": "开始日期", "to": "结束日期", "product": "商品", "platform": "平台",
                "channel": "渠道", "by": "分组"}
_ROLE_NAMES = {"marketing": "市场", "merchant": "商家"}
_LOGIN_FAILED = (f"邮箱或密码不正确。连续输错 {MAX_FAILURES} 次后，账号将锁定 "
                 f"{int(LOCK_SECONDS // 60)} 分钟。")
_LOGIN_THROTTLED = ("这个网络登录失败的次数太多，为保护账号安全，暂时不能登录。"
                    "请 {minutes} 分钟后再试。")
_HEADERS = {
    # Nothing but our own stylesheet: no script, no frame, no outside request.
    # The console's copy buttons are our own script file: 'self', never inline.
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                "script-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers send "Origin: null" on our own forms' POSTs.
    "Referrer-Policy": "same-origin",
}


# --- rendering ------------------------------------------------------------------------------
def _percent(row: dict[str, Any], rate: str) -> str:
    """A row's rate as read, "—" where the step before is zero: from the row's counts,
    rounded once (``stats.unrounded_rate``), not from the API's rate rounded to 4 places."""
    return _as_percent(unrounded_rate(row, rate))


def _as_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _platform_label(platform: str) -> str:
    if platform == "web":
        return "浏览器及其他"
    adapter = by_platform(platform)
    return adapter.label if adapter is not None else platform


def _channel_label(channel: str) -> str:
    return channel or "（未标记渠道）"


def _css_url(request: web.Request) -> str:
    return _static_url(request, "dashboard.css")


def _static_url(request: web.Request, name: str) -> str:
    """A file of ours, named by its content: cached for good, fetched again when it changes."""
    _body, _type, etag = request.app[_STATIC][name]
    return f"/dashboard/static/{name}?v={etag}"


def _visitors(row: dict[str, Any]) -> str:
    """Unique visitors as read: exact, or the estimate with its 95% margin."""
    error = int(row.get("unique_visitors_error") or 0)
    value = charts.number(int(row["unique_visitors"]))
    return f"{value} ±{charts.number(error)}" if error else value


def render(request: web.Request, name: str, *, status: int = 200,
           session: Session | None = None, **context: Any) -> web.Response:
    response = request.app[PAGES].render(
        name if "/" in name else f"dashboard/{name}", status=status,
        css_url=_css_url(request), js_url=_static_url(request, "console.js"), session=session,
        role_name=_ROLE_NAMES.get(session.role, session.role) if session else "",
        num=charts.number, pct=_percent, platform_label=_platform_label,
        channel_label=_channel_label, visitors=_visitors,
        timezone=request.app[CLOCK].timezone, **context)
    response.headers.update(_HEADERS)
    return response


def error_page(request: web.Request, status: int, title: str, detail: str, *,
               session: Session | None = None) -> web.Response:
    return render(request, "error.html", status=status, session=session, title=title,
                  detail=detail, merchant_name="", nav="")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page(handler: Handler) -> Handler:
    """Storage trouble becomes a page a person understands, not a stack trace."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            log.warning("dashboard.storage_unavailable", path=request.path, error=str(exc))
            return error_page(request, 503, "数据暂时读不到",
                              "数据库暂时无法连接，通常几秒钟后就会恢复。请稍后刷新本页。")

    return wrapped


# --- sessions -------------------------------------------------------------------------------
async def _session(request: web.Request) -> Session | None:
    return await request.app[SESSIONS].current(request.app[STORE],
                                               request.cookies.get(SESSION_COOKIE))


async def _require(request: web.Request) -> Session:
    """The signed-in user, or off to the login page (and back here afterwards)."""
    session = await _session(request)
    if session is None:
        raise web.HTTPSeeOther(f"/dashboard/login?next={quote(request.path_qs, safe='')}")
    return session


# The console (gateway/console) shares the dashboard's sessions, layout and error pages.
current_session = _session
require_session = _require
storage_guarded = _page


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _secure(request: web.Request) -> bool:
    return request.app[PUBLIC_URL].startswith("https://")


def _login_form(request: web.Request, *, status: int = 200, error: str = "",
                email: str = "", next_url: str = "/dashboard", notice: str = "") -> web.Response:
    """The login page with a fresh double-submit token (cookie + hidden field)."""
    token = new_csrf_token()
    response = render(request, "login.html", status=status, error=error, email=email,
                      next_url=next_url, notice=notice, csrf=token, merchant_name="", nav="")
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/dashboard/login",
                        httponly=True, samesite="Strict", secure=_secure(request))
    return response


@_page
async def login_page(request: web.Request) -> web.StreamResponse:
    next_url = safe_next(request.query.get("next"))
    if await _session(request) is not None:
        raise web.HTTPSeeOther(next_url)
    notice = "你已退出登录。" if "bye" in request.query else ""
    return _login_form(request, next_url=next_url, notice=notice)


@_page
async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    next_url = safe_next(str(form.get("next", "")))
    email = str(form.get("email", "")).strip()
    if (not same_origin(request, request.app[PUBLIC_URL])
            or not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf"))):
        log.info("dashboard.login_refused", reason="csrf")
        return _login_form(request, status=403, email=email, next_url=next_url,
                           error="登录表单已过期，请重新输入后再试。")
    password = str(form.get("password", ""))
    app = request.app
    address = app[IP_HASHER][client_address(request, app[SETTINGS]["server.trust_forwarded"])]
    result = await authenticate(app[STORE], email, password, address=address,
                                slots=app[LOGIN_SLOTS])
    if result.reason == "throttled":
        log.warning("dashboard.login_throttled", address=address)
        wait = math.ceil(result.retry_after)
        response = _login_form(request, status=429, email=email, next_url=next_url,
                               error=_LOGIN_THROTTLED.format(minutes=math.ceil(wait / 60)))
        response.headers["Retry-After"] = str(wait)
        return response
    if result.user is None:
        log.info("dashboard.login_failed", reason=result.reason)
        return _login_form(request, status=401, email=email, next_url=next_url,
                           error=_LOGIN_FAILED)
    user = result.user
    token, _ = request.app[SESSIONS].mint(user.email, user.merchant_id, user.role)
    log.info("dashboard.login", merchant=user.merchant_id, role=user.role)
    response = _see_other(next_url)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL, path=COOKIE_PATH,
                        httponly=True, samesite="Lax", secure=_secure(request))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
    return response


@_page
async def logout(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        raise web.HTTPSeeOther("/dashboard/login")
    form = await read_form(request)
    if (not same_origin(request, request.app[PUBLIC_URL])
            or not csrf_matches(session.csrf, form.get("csrf"))):
        return error_page(request, 403, "操作未完成",
                          "这个请求没有通过安全校验（可能来自其他网站，或页面已过期）。"
                          "请回到看板页面再试一次。", session=session)
    await request.app[STORE].end_sessions(session.email, now=time.time())
    log.info("dashboard.logout", merchant=session.merchant_id)
    response = _see_other("/dashboard/login?bye=1")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- filters --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of a page, parsed like the API's, and kept in every URL it links to."""

    query: StatsQuery
    values: dict[str, str]
    error: str = ""

    def qs(self, **changes: str | None) -> str:
        values = {**self.values, **changes}
        return urlencode({k: v for k, v in values.items() if v})

    def url(self, path: str, **changes: str | None) -> str:
        qs = self.qs(**changes)
        return f"{path}?{qs}" if qs else path


def _filters(request: web.Request, by: str, **fixed: str) -> Filters:
    raw = {k: request.query.get(k, "").strip() for k in FILTER_KEYS}
    raw.update(fixed)
    today = request.app[CLOCK].today()
    error = ""
    try:
        query = parse_stats_query({**raw, "by": by}, today)
    except StatsQueryError as exc:
        error = f"{_FIELD_NAMES.get(exc.field, exc.field)}填写有误：{exc.message}。已显示默认范围。"
        raw = {k: "" for k in FILTER_KEYS}
        raw.update(fixed)
        query = parse_stats_query({**raw, "by": by}, today)
    values = {"from": query.from_day.isoformat(), "to": query.to_day.isoformat(),
              "product": str(query.product_id) if query.product_id is not None else "",
              "platform": query.platform or "", "channel": query.channel or ""}
    return Filters(query, values, error)


def _with(query: StatsQuery, **changes: Any) -> StatsQuery:
    """The same query with some fields changed (``by``, ``product_id``, ``channel``...)."""
    changed = copy.copy(query)
    for name, value in changes.items():
        if not hasattr(changed, name):
            raise AttributeError(name)
        setattr(changed, name, value)
    return changed


def _ranges(filters: Filters, today: date, path: str) -> list[tuple[str, str, bool]]:
    """Quick date ranges: (name, url, selected)."""
    found = []
    for name, days in (("今天", 1), ("近 7 天", 7), ("近 30 天", 30), ("近 90 天", 90)):
        start = (today - timedelta(days=days - 1)).isoformat()
        selected = (filters.values["from"], filters.values["to"]) == (start, today.isoformat())
        found.append((name, filters.url(path, **{"from": start, "to": today.isoformat()}),
                      selected))
    return found


def _days(query: StatsQuery, rows: Sequence[dict[str, Any]], metric: str = "clicks",
          ) -> list[tuple[str, int]]:
    """Every day of the range with its figure (0 where there were no rows)."""
    by_day = {r["day"]: int(r[metric]) for r in rows}
    span = (query.to_day - query.from_day).days + 1
    days = [(query.from_day + timedelta(days=i)).isoformat() for i in range(span)]
    return [(d, by_day.get(d, 0)) for d in days]


async def _all_products(store: Store, merchant_id: str) -> list[Product]:
    found: list[Product] = []
    after = 0
    while len(found) < _MAX_PRODUCTS:
        page = await store.list_products(merchant_id, limit=200, after_id=after)
        found.extend(page)
        if len(page) < 200:
            break
        after = page[-1].id
    return found


async def _channels(store: Store, merchant_id: str, query: StatsQuery) -> list[str]:
    """The channels seen in the range (whatever the channel filter), for the filter's list."""
    rows = await run_stats(store, merchant_id, _with(query, by="channel", channel=None))
    names = [str(r["channel"]) for r in rows if r["channel"]]
    if query.channel and query.channel not in names:
        names.append(query.channel)
    return sorted(names)


async def _common(request: web.Request, session: Session, filters: Filters, path: str,
                  nav: str) -> dict[str, Any]:
    """What the header and the filter form of every page need."""
    store = request.app[STORE]
    merchant = await store.get_merchant(session.merchant_id)
    products = await _all_products(store, session.merchant_id)
    return {
        "session": session, "nav": nav, "filters": filters, "path": path,
        "merchant_name": merchant.name if merchant else session.merchant_id,
        "products": products,
        "platforms": [(p, _platform_label(p)) for p in platform_ids()],
        "channels": await _channels(store, session.merchant_id, filters.query),
        "ranges": _ranges(filters, request.app[CLOCK].today(), path),
        "reset_url": path,
    }


def _export(filters: Filters, by: str, **fixed: str) -> str:
    return filters.url("/dashboard/export.csv", by=by, **fixed)


_BAR_SERIES = (("clicks", "点击"), ("unique_visitors", "独立访客"), ("adds", "添加企微"))


def _funnel(total: dict[str, Any]) -> list[tuple[str, int, str]]:
    """The funnel's steps: (name, count, rate against the step named)."""
    return [("点击", total["clicks"], ""),
            ("打开店铺", total["storefront_opens"],
             f"占点击 {_percent(total, 'open_rate')}，其中直接跳转 "
             f"{charts.number(total['redirects'])}"),
            ("进入企微", total["entries"], f"占点击 {_percent(total, 'entry_rate')}"),
            ("添加企微", total["adds"], f"占进入 {_percent(total, 'add_rate')}"),
            ("发起会话", total["chats"], f"占添加 {_percent(total, 'chat_rate')}")]


def _outcomes(total: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Where the clicks went: (name, count, share of clicks)."""
    clicks = int(total["clicks"])
    named = [("直接跳转店铺", "redirects"), ("落地页", "landings"), ("浏览器引导页", "guides")]
    return [(name, int(total[key]), _as_percent(int(total[key]) / clicks if clicks else None))
            for name, key in named]


async def _alerts(request: web.Request, merchant_id: str) -> list[dict[str, Any]]:
    """The merchant's recent alerts, each with the day it came on (the stats time zone)."""
    clock = request.app[CLOCK]
    return [{**alert, "day": clock.day_of(datetime.fromisoformat(alert["created_at"])
                                          .timestamp())}
            for alert in await recent_alerts(request.app, merchant_id)]


# --- pages ----------------------------------------------------------------------------------
@_page
async def overview(request: web.Request) -> web.StreamResponse:
    session = await _require(request)
    filters = _filters(request, "platform")
    store = request.app[STORE]
    merchant_id = session.merchant_id
    rows = await run_stats(store, merchant_id, filters.query)
    rows.sort(key=lambda r: (-int(r["clicks"]), r["platform"]))
    channel_rows = await run_stats(store, merchant_id, _with(filters.query, by="channel"))
    channel_rows.sort(key=lambda r: (-int(r["clicks"]), r["channel"]))
    total = await run_total(store, merchant_id, filters.query)
    entry = await store.get_entry(merchant_id)
    attribution = "none" if entry is None else (
        "visits_only" if entry.kind == "static" else "adds")
    bars = charts.bar_chart(
        [(_platform_label(r["platform"]), [int(r[k]) for k, _ in _BAR_SERIES]) for r in rows],
        _BAR_SERIES, label="各平台的点击、独立访客与添加企微")
    steps = _funnel(total)
    funnel = charts.funnel([(name, value) for name, value, _ in steps],
                           label="转化漏斗：点击 → 打开店铺 → 进入企微 → 添加企微 → 发起会话")
    return render(
        request, "overview.html", rows=rows, channel_rows=channel_rows, total=total,
        bars=bars, funnel=funnel, steps=steps, attribution=attribution,
        outcomes=_outcomes(total), alerts=await _alerts(request, merchant_id),
        export_platform=_export(filters, "platform"), export_channel=_export(filters, "channel"),
        metrics=METRICS, rates=RATES, exact_up_to=EXACT_MAX,
        **await _common(request, session, filters, "/dashboard", "overview"))


@_page
async def products_page(request: web.Request) -> web.StreamResponse:
    session = await _require(request)
    filters = _filters(request, "product")
    store = request.app[STORE]
    merchant_id = session.merchant_id
    rows = await run_stats(store, merchant_id, filters.query)
    by_id = {r["product_id"]: r for r in rows}
    common = await _common(request, session, filters, "/dashboard/products", "products")
    from ..console.products import list_filter  # the console's search and states

    products, console = list_filter(request, common["products"])
    if filters.query.product_id is not None:
        products = [p for p in products if p.id == filters.query.product_id]
    zero = with_funnel({m: 0 for m in METRICS})
    items = sorted(((p, by_id.get(p.id, zero)) for p in products),
                   key=lambda item: (-int(item[1]["clicks"]), item[0].id))
    try:
        page = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        page = 1
    pages = max((len(items) + PRODUCTS_PER_PAGE - 1) // PRODUCTS_PER_PAGE, 1)
    page = min(page, pages)
    shown = items[(page - 1) * PRODUCTS_PER_PAGE: page * PRODUCTS_PER_PAGE]
    table = []
    for product, row in shown:
        days = await run_stats(store, merchant_id,
                               _with(filters.query, by="day", product_id=product.id))
        series = [v for _, v in _days(filters.query, days)]
        spark = charts.sparkline(
            series, label=f"{product.title}：每日点击，合计 {charts.number(sum(series))}")
        table.append((product, row, spark))
    untraced = by_id.get(None)
    return render(
        request, "products.html", table=table, untraced=untraced, page=page, pages=pages,
        prev_url=filters.url("/dashboard/products", page=str(page - 1),
                             q=console["q"], state=console["state"]) if page > 1 else "",
        next_url=(filters.url("/dashboard/products", page=str(page + 1),
                              q=console["q"], state=console["state"])
                  if page < pages else ""),
        export_product=_export(filters, "product"), **console,
        can_edit=session.principal.can_write, **common)


def _product_id(request: web.Request) -> int | None:
    # As the API's: ASCII digits in the stores' range, or no product (int() takes "1_0",
    # Arabic-Indic digits, and 20 digits no store can look up).
    return parse_uint(request.match_info["id"])


def _not_found(request: web.Request, session: Session | None) -> web.Response:
    return error_page(request, 404, "找不到这个页面",
                      "这个商品或页面不存在，或者不属于你的店铺。请从看板的商品列表进入。",
                      session=session)


@_page
async def product_page(request: web.Request) -> web.StreamResponse:
    session = await _require(request)
    store = request.app[STORE]
    product_id = _product_id(request)
    product = (await store.get_product(session.merchant_id, product_id)
               if product_id is not None else None)
    if product is None:
        return _not_found(request, session)
    path = f"/dashboard/products/{product.id}"
    filters = _filters(request, "platform", product=str(product.id))
    platform_rows = await run_stats(store, session.merchant_id, filters.query)
    platform_rows.sort(key=lambda r: (-int(r["clicks"]), r["platform"]))
    day_rows = await run_stats(store, session.merchant_id, _with(filters.query, by="day"))
    days = _days(filters.query, day_rows)
    day_table = [r for r in day_rows if any(int(r[m]) for m in METRICS)]
    total = await run_total(store, session.merchant_id, filters.query)
    qr_channel = request.query.get("qr_ch", "").strip()
    qr_error = ""
    if qr_channel and not CHANNEL_PATTERN.fullmatch(qr_channel):
        qr_error = "渠道名只能用小写字母、数字和下划线，最多 32 个字符。"
        qr_channel = ""
    link = share_url(request.app[PUBLIC_URL], product.code)
    qr_link = share_url(request.app[PUBLIC_URL], product.code, qr_channel)
    suffix = f"?ch={qr_channel}" if qr_channel else ""
    bars = charts.bar_chart(
        [(_platform_label(r["platform"]), [int(r[k]) for k, _ in _BAR_SERIES])
         for r in platform_rows], _BAR_SERIES,
        label=f"{product.title}：各平台的点击、独立访客与添加企微")
    steps = _funnel(total)
    funnel = charts.funnel([(name, value) for name, value, _ in steps],
                           label=f"{product.title}：转化漏斗")
    common = await _common(request, session, filters, path, "products")
    from ..console.products import product_context  # the console's part of this page

    return render(
        request, "product.html", **await product_context(request, session, product),
        product=product, platform_rows=platform_rows,
        day_table=day_table, total=total, bars=bars, funnel=funnel,
        days_chart=charts.day_bars(days, label=f"{product.title}：每日点击"),
        steps=steps, outcomes=_outcomes(total), share_url=link, qr_link=qr_link,
        qr_channel=qr_channel,
        qr_error=qr_error, qr=Markup(qr_svg(qr_link, scale=5)),
        qr_svg_url=f"{path}/qr.svg{suffix}", qr_png_url=f"{path}/qr.png{suffix}",
        export_platform=_export(filters, "platform", product=str(product.id)),
        export_day=_export(filters, "day", product=str(product.id)),
        **common)


@_page
async def export_csv(request: web.Request) -> web.StreamResponse:
    """What a page shows, as the API's CSV for the same filters (``by`` says which table)."""
    session = await _require(request)
    params: dict[str, str | None] = {k: request.query.get(k) for k in (*FILTER_KEYS, "by")}
    try:
        query = parse_stats_query(params, request.app[CLOCK].today())
    except StatsQueryError as exc:
        return error_page(request, 422, "无法导出",
                          f"{_FIELD_NAMES.get(exc.field, exc.field)}填写有误：{exc.message}。"
                          "请回到看板重新选择筛选条件。", session=session)
    rows = await run_stats(request.app[STORE], session.merchant_id, query)
    return web.Response(
        text=rows_csv(query.by, rows, request.app[CLOCK].timezone), content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition":
                 f'attachment; filename="linkloop-{query.by}-{query.from_day}'
                 f'-{query.to_day}.csv"', "Cache-Control": "no-store"})


@_page
async def product_qr(request: web.Request) -> web.StreamResponse:
    """The product's share link as a QR code, for a signed-in user (``?ch=`` tags it)."""
    session = await _require(request)
    product_id = _product_id(request)
    product = (await request.app[STORE].get_product(session.merchant_id, product_id)
               if product_id is not None else None)
    if product is None:
        return _not_found(request, session)
    channel = request.query.get("ch", "")
    if channel and not CHANNEL_PATTERN.fullmatch(channel):
        return error_page(request, 422, "渠道名不对",
                          "渠道名只能用小写字母、数字和下划线，最多 32 个字符。",
                          session=session)
    qr = segno.make(share_url(request.app[PUBLIC_URL], product.code, channel), error="m")
    name = f"linkloop-{product.code}{'-' + channel if channel else ''}"
    if request.match_info["fmt"] == "svg":
        body = qr.svg_inline(scale=8).encode()
        content_type = "image/svg+xml"
    else:
        out = io.BytesIO()
        qr.save(out, kind="png", scale=8)
        body, content_type = out.getvalue(), "image/png"
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f'inline; filename="{name}.{request.match_info["fmt"]}"',
        "Cache-Control": "private, max-age=300"})


async def static(request: web.Request) -> web.StreamResponse:
    found = request.app[_STATIC].get(request.match_info["name"])
    if found is None:
        return error_page(request, 404, "找不到这个页面", "这个文件不存在。")
    body, content_type, etag = found
    return web.Response(body=body, content_type=content_type, headers={
        "Cache-Control": "public, max-age=31536000, immutable" if request.query.get("v")
        else "public, max-age=300", "ETag": f'"{etag}"', "X-Content-Type-Options": "nosniff"})


async def dashboard_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/dashboard")


@_page
async def not_found(request: web.Request) -> web.StreamResponse:
    return _not_found(request, await _session(request))


# --- wiring ---------------------------------------------------------------------------------
def _load_static() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    folder = resources.files("gateway") / "static"
    for name, content_type in (("dashboard.css", "text/css"),
                               ("console.js", "text/javascript")):
        body = (folder / name).read_bytes()
        files[name] = (body, content_type, hashlib.sha256(body).hexdigest()[:12])
    return files


async def _start(app: web.Application) -> None:
    from ..keys import auth_secret

    settings = app[SETTINGS]
    # The API's signing key (the same file or setting TokenService uses), another audience.
    app[SESSIONS] = SessionService(auth_secret(settings), settings["auth.audience"])


def setup_routes(app: web.Application) -> None:
    app[LOGIN_SLOTS] = asyncio.Semaphore(_CONCURRENT_LOGINS)
    app[_STATIC] = _load_static()
    app.on_startup.append(_start)
    router = app.router
    router.add_get("/dashboard", guarded(overview), name="dashboard")
    router.add_get("/dashboard/", guarded(dashboard_root))
    router.add_get("/dashboard/login", guarded(login_page), name="dashboard_login")
    router.add_post("/dashboard/login", guarded(login))
    router.add_post("/dashboard/logout", guarded(logout))
    router.add_get("/dashboard/products", guarded(products_page))
    router.add_get(r"/dashboard/products/{id}", guarded(product_page))
    router.add_get(r"/dashboard/products/{id}/qr.{fmt:svg|png}", guarded(product_qr))
    router.add_get("/dashboard/export.csv", guarded(export_csv))
    router.add_get("/dashboard/static/{name}", guarded(static))
    router.add_get("/dashboard/{tail:.*}", guarded(not_found))
