"""Named channels in the console: a KOL, a livestream, a poster, each with its ``?ch=`` link
and QR code per product, and a list with each channel's figures (the stats API's rows
``by=channel`` for the range chosen, the dashboard's last 30 days by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from markupsafe import Markup

from ..api_console import all_products, channel_from
from ..appkeys import CLOCK, PUBLIC_URL, STORE
from ..catalog import share_url
from ..dashboard.session import Session
from ..dashboard.views import render, require_session
from ..errors import ApiError, guarded
from ..pages import qr_svg
from ..stats import StatsQueryError, parse_stats_query, run_stats, with_funnel
from ..store import METRICS, ChannelExists
from .messages import say
from .web import console_page, console_write, page_context, see_other

__all__ = ["setup_routes"]


async def _figures(request: web.Request, merchant_id: str) -> tuple[dict[str, Any], Any]:
    """Each channel's row for the range asked (``from``/``to``), and the query it used."""
    params = {"from": request.query.get("from"), "to": request.query.get("to"),
              "by": "channel"}
    try:
        query = parse_stats_query(params, request.app[CLOCK].today())
    except StatsQueryError:
        query = parse_stats_query({"by": "channel"}, request.app[CLOCK].today())
    rows = await run_stats(request.app[STORE], merchant_id, query)
    return {str(r["channel"]): r for r in rows}, query


async def _list(request: web.Request, *, status: int = 200, error: str = "", code: str = "",
                values: dict[str, str] | None = None) -> web.Response:
    session = await require_session(request)
    store = request.app[STORE]
    channels = await store.list_channels(session.merchant_id)
    figures, query = await _figures(request, session.merchant_id)
    zero = with_funnel({m: 0 for m in METRICS})
    named = {c.name for c in channels}
    return render(
        request, "console/channels.html", status=status,
        rows=[(c, figures.get(c.name, zero)) for c in channels],
        unnamed=[r for name, r in sorted(figures.items()) if name and name not in named],
        from_day=query.from_day.isoformat(), to_day=query.to_day.isoformat(),
        error=error, code=code, values=values or {"name": "", "label": ""},
        **await page_context(request, session, "channels"))


@console_page
async def channels_page(request: web.Request) -> web.StreamResponse:
    return await _list(request)


@console_write
async def create(request: web.Request, session: Session,
                data: Mapping[str, Any]) -> web.StreamResponse:
    values = {"name": str(data.get("name", "")).strip(), "label": str(data.get("label", ""))}
    try:
        channel = channel_from(values, session.merchant_id)
        await request.app[STORE].create_channel(channel)
    except ChannelExists:
        error = ApiError(409, "channel_exists", "exists", "name")
        return await _list(request, status=409, error=say(error), code=error.code,
                           values=values)
    except ApiError as exc:
        return await _list(request, status=422, error=say(exc), code=exc.code, values=values)
    return see_other(f"/dashboard/channels/{channel.name}")


@console_write
async def delete(request: web.Request, session: Session,
                data: Mapping[str, Any]) -> web.StreamResponse:
    await request.app[STORE].delete_channel(session.merchant_id, request.match_info["name"])
    return see_other("/dashboard/channels")


@console_page
async def channel_page(request: web.Request) -> web.StreamResponse:
    """One channel: its link and QR code for each product on sale."""
    session = await require_session(request)
    store = request.app[STORE]
    name = request.match_info["name"]
    channel = next((c for c in await store.list_channels(session.merchant_id)
                    if c.name == name), None)
    if channel is None:
        raise ApiError(404, "not_found", "no such channel")
    products = [p for p in await all_products(store, session.merchant_id) if not p.retired]
    base = request.app[PUBLIC_URL]
    chosen = next((p for p in products if str(p.id) == request.query.get("product")),
                  products[0] if products else None)
    link = share_url(base, chosen.code, channel.name) if chosen else ""
    figures, _ = await _figures(request, session.merchant_id)
    return render(
        request, "console/channel.html", channel=channel, products=products, chosen=chosen,
        link=link, qr=Markup(qr_svg(link, scale=5)) if link else "",
        links={p.id: share_url(base, p.code, channel.name) for p in products},
        row=figures.get(channel.name), **await page_context(request, session, "channels"))


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/dashboard/channels", guarded(channels_page))
    router.add_post("/dashboard/channels", guarded(create))
    router.add_get(r"/dashboard/channels/{name:[a-z0-9_]{1,32}}", guarded(channel_page))
    router.add_post(r"/dashboard/channels/{name:[a-z0-9_]{1,32}}/delete", guarded(delete))
