"""Figures checked against what the test itself did, not against another output of the code.

Other tests compare the dashboard with the stats API, or the dashboard's CSV with the API's
CSV: both come from one function, so a wrong figure in it passes them all. Here a scripted
set of visits, on days the test sets through the clock, gives expected figures counted by
the test, and every output is held to them: the API's JSON and CSV and the dashboard's
tables and CSV, by platform, product, day and channel, with filters. QR codes are read
back by zbar, an independent decoder, and compared with the link the test expects.
"""

from __future__ import annotations

import csv
import io
import re
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CLOCK, RECORDER
from gateway.clock import DayClock

from .conftest import (
    BOT_UA,
    DESKTOP_UA,
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    make_settings,
)
from .hand import Hand
from .test_browser import DOUYIN_ANDROID, WECHAT_IOS, decode_qr, zbar  # noqa: F401 -- fixture
from .test_dashboard import Figures, add_user, login, shown

Client = TestClient[web.Request, web.Application]
PUBLIC = "http://go.test"  # plain http: the dashboard's session cookie is not Secure
ACQUISITION = "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"
#: The apps the test taps from, and the platform each one is.
APPS = {"wechat": WECHAT_IOS, "web": DESKTOP_UA, "douyin": DOUYIN_ANDROID, "taobao": TAOBAO_UA}
DAY_A, DAY_B = "2026-11-01", "2026-11-02"  # in Asia/Shanghai, the default stats.timezone
COUNTS = ("clicks", "unique_visitors", "bot_clicks", "storefront_opens", "entries", "adds")


@dataclass
class Row:
    """One thing the test did and what it must count as: day, platform, channel, product."""

    day: str
    platform: str
    channel: str
    product: int
    metric: str
    visitor: str | None = None


class Shop:
    """The gateway under test, with a ledger of every visit and hop the test made."""

    def __init__(self, client: Client, tenant: Tenant, hand: Hand) -> None:
        self.client = client
        self.tenant = tenant
        self.hand = hand
        self.ledger: list[Row] = []
        self.cookies: dict[str, str] = {}  # visitor name -> their ll_v cookie
        self.day = DAY_A

    async def visit(self, visitor: str | None, code: str, product: int, app: str,
                    channel: str = "") -> str:
        """A tap on the share link; returns the page (or the redirect's target)."""
        headers = {"User-Agent": BOT_UA if app == "bot" else APPS[app]}
        if visitor in self.cookies:
            headers["Cookie"] = f"ll_v={self.cookies[visitor]}"
        self.client.session.cookie_jar.clear()
        query = f"?ch={channel}" if channel else ""
        resp = await self.client.get(f"/p/{code}{query}", headers=headers,
                                     allow_redirects=False)
        assert resp.status == 200, (app, resp.status)  # no target opens in-app: no redirects
        if visitor is not None and visitor not in self.cookies:
            self.cookies[visitor] = resp.cookies["ll_v"].value
        if app == "bot":
            self.ledger.append(Row(self.day, "web", channel, product, "bot_clicks"))
        else:
            self.ledger.append(Row(self.day, app, channel, product, "clicks", visitor))
        return await resp.text()

    async def hop(self, page: str, kind: str, app: str, channel: str, product: int) -> None:
        """Follow the page's /o/ (storefront) or /e/ (WeCom entry) link, from ``app``."""
        links = re.findall(rf'href="(/{kind}/[^"]+)"', page)
        assert links, page
        self.client.session.cookie_jar.clear()
        resp = await self.client.get(links[-1].replace("&amp;", "&"), allow_redirects=False,
                                     headers={"User-Agent": APPS[app]})
        assert resp.status in (200, 302), resp.status
        # The hop counts under the shopper's app and the channel of the click it came from.
        metric = "storefront_opens" if kind == "o" else "entries"
        self.ledger.append(Row(self.day, app, channel, product, metric))

    async def flush(self) -> None:
        assert self.client.app is not None
        await self.client.app[RECORDER].flush()


def expected(ledger: list[Row], by: str, *, days: tuple[str, str] = (DAY_A, DAY_B),
             **filters: Any) -> dict[str, dict[str, Any]]:
    """The figures per ``by`` key, counted from the ledger: a visitor is unique once in a
    row, however many days, platforms or channels of it they came on."""
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    visitors: dict[str, set[str]] = defaultdict(set)
    for row in ledger:
        if not days[0] <= row.day <= days[1] or any(
                getattr(row, name) != value for name, value in filters.items()):
            continue
        key = str({"platform": row.platform, "day": row.day, "channel": row.channel,
                   "product": row.product}[by])
        figures = rows[key]
        figures[row.metric] += 1
        if row.visitor is not None:
            visitors[key].add(row.visitor)
    for key, seen in visitors.items():
        rows[key]["unique_visitors"] = len(seen)
    for figures in rows.values():
        clicks, entries = figures["clicks"], figures["entries"]
        figures["open_rate"] = round(figures["storefront_opens"] / clicks, 4) if clicks else None
        figures["entry_rate"] = round(entries / clicks, 4) if clicks else None
        figures["add_rate"] = round(figures["adds"] / entries, 4) if entries else None
    return dict(rows)


RATES = ("open_rate", "entry_rate", "add_rate")


def _from_json(rows: list[dict[str, Any]], by: str) -> dict[str, dict[str, Any]]:
    key = "product_id" if by == "product" else by
    return {str(r[key]): {m: r[m] for m in (*COUNTS, *RATES)} for r in rows}


def _from_csv(text: str, by: str) -> dict[str, dict[str, Any]]:
    # Comment lines (a time zone note, say) are not rows.
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    key = "product_id" if by == "product" else by
    out = {}
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        out[r[key]] = {**{m: int(r[m]) for m in COUNTS},
                       **{m: float(r[m]) if r[m] else None for m in RATES}}
    return out


def _columns(table: dict[str, dict[str, str]], metrics: tuple[str, ...],
             ) -> dict[str, dict[str, str]]:
    """A dashboard table's cells of ``metrics`` only (the ledger counts no outcomes)."""
    return {key: {m: row[m] for m in metrics} for key, row in table.items()}


def _as_shown(figures: dict[str, dict[str, Any]], metrics: tuple[str, ...],
              ) -> dict[str, dict[str, str]]:
    """How a person reads the figures on the dashboard: 1,234 and 12.5% (each rate the
    ratio of the counts, rounded once)."""
    return {key: shown(row, metrics) for key, row in figures.items()}


TABLE = ("clicks", "unique_visitors", "bot_clicks", "storefront_opens", "entries", "adds",
         *RATES)


@pytest.fixture
async def shop(aiohttp_client: ClientFactory, tmp_path: Path) -> Shop:
    # Clicks reach storage only when the test flushes: which of them share a batch is
    # the test's choice, not the timer's.
    app = create_app(make_settings(tmp_path, server__public_url=PUBLIC,
                                   recorder__flush_interval_ms=600_000))
    # 10:00 in Shanghai; every read a second on, so "first" is never a tie.
    hand = Hand("2026-11-01T02:00:00", step=1.0)
    app[CLOCK] = DayClock("Asia/Shanghai", clock=hand)
    client = await aiohttp_client(app)
    tenant = await add_tenant(client, "acme")
    resp = await client.put("/api/entry", json={"kind": "acquisition_link", "url": ACQUISITION},
                            headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    return Shop(client, tenant, hand)


async def _product(shop: Shop, title: str, targets: dict[str, Any]) -> tuple[int, str]:
    resp = await shop.client.post("/api/products", json={"title": title, "targets": targets},
                                  headers=shop.tenant.auth)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["id"], body["code"]


async def _script(shop: Shop) -> tuple[int, int]:
    """The visits. Neither product has a target its visitors' apps open in place, so
    every tap is a page (no direct redirects) and storefront opens are the /o/ hops."""
    tea, tea_code = await _product(shop, "Tea", {"jd": {"sku": "100000000001"},
                                                 "web": {"url": "https://shop.example.com/t"}})
    mug, mug_code = await _product(shop, "Mug", {"web": {"url": "https://shop.example.com/m"}})
    # Day A. Ann comes through the live stream, then again through the poster: one unique
    # visitor of each channel, and both clicks in one batch. Her storefront open follows
    # the poster click: it counts under "poster".
    await shop.visit("ann", tea_code, tea, "wechat", "live")
    page = await shop.visit("ann", tea_code, tea, "wechat", "poster")
    await shop.hop(page, "o", "wechat", "poster", tea)
    # Bob sees the poster, and in a later batch the live stream: one of each channel's too.
    await shop.visit("bob", mug_code, mug, "web", "poster")
    await shop.flush()
    page = await shop.visit("bob", mug_code, mug, "web", "live")
    await shop.hop(page, "e", "web", "live", mug)
    # Cat, untagged, inside Douyin (which opens no web link: the guide), goes into WeCom.
    page = await shop.visit("cat", tea_code, tea, "douyin")
    await shop.hop(page, "e", "douyin", "", tea)
    await shop.visit(None, tea_code, tea, "bot")
    await shop.flush()
    # Day B starts at 16:00 UTC.
    shop.hand.set("2026-11-01T15:59:59")
    shop.day = DAY_B
    await shop.visit("dan", tea_code, tea, "taobao", "live")
    await shop.visit("eve", mug_code, mug, "wechat")
    page = await shop.visit("eve", mug_code, mug, "wechat")
    await shop.hop(page, "o", "wechat", "", mug)
    await shop.hop(page, "o", "wechat", "", mug)
    await shop.flush()
    return tea, mug


async def test_every_output_matches_the_figures_counted_by_the_test(shop: Shop) -> None:
    tea, mug = await _script(shop)
    client, tenant = shop.client, shop.tenant
    by_platform = expected(shop.ledger, "platform")
    # The figures counted by hand, written out once so a reader can check the ledger too.
    assert {k: (v["clicks"], v["unique_visitors"], v["bot_clicks"], v["storefront_opens"],
                v["entries"]) for k, v in by_platform.items()} == {
        "wechat": (4, 2, 0, 3, 0), "web": (2, 1, 1, 0, 1), "douyin": (1, 1, 0, 0, 1),
        "taobao": (1, 1, 0, 0, 0)}
    # Ann and Bob came through both channels: each one of both channels' visitors.
    assert {k: v["unique_visitors"] for k, v in expected(shop.ledger, "channel").items()} == {
        "live": 3, "poster": 2, "": 2}

    queries: list[tuple[str, dict[str, Any], str]] = [
        (by, {}, "") for by in ("platform", "product", "day", "channel")]
    queries += [
        ("platform", {"channel": "live"}, "&channel=live"),
        ("channel", {"platform": "wechat"}, "&platform=wechat"),
        ("day", {"product": mug}, f"&product={mug}"),
        ("platform", {"channel": "poster"}, "&channel=poster"),
        ("product", {"channel": "poster"}, "&channel=poster"),
    ]
    for by, filters, query in queries:
        want = expected(shop.ledger, by, **filters)
        assert want, (by, filters)
        url = f"/api/stats?by={by}&from={DAY_A}&to={DAY_B}{query}"
        resp = await client.get(url, headers=tenant.marketing_auth)
        assert _from_json((await resp.json())["rows"], by) == want, url
        resp = await client.get(url + "&format=csv", headers=tenant.marketing_auth)
        assert _from_csv(await resp.text(), by) == want, url + "&format=csv"
    # One day alone: day B.
    resp = await client.get(f"/api/stats?by=platform&from={DAY_B}&to={DAY_B}",
                            headers=tenant.marketing_auth)
    assert _from_json((await resp.json())["rows"], "platform") == expected(
        shop.ledger, "platform", days=(DAY_B, DAY_B))

    # The dashboard, as a marketing person reads it.
    await add_user(client, "acme", "anna@example.com")
    assert (await login(client, "anna@example.com")).status == 303
    span = f"from={DAY_A}&to={DAY_B}"
    page = Figures(await (await client.get(f"/dashboard?{span}")).text())
    assert _columns(page.tables["platform-table"], TABLE) == _as_shown(by_platform, TABLE)
    assert _columns(page.tables["channel-table"], TABLE) == _as_shown(
        expected(shop.ledger, "channel"), TABLE)
    assert page.tiles["clicks"] == "8" and page.tiles["unique_visitors"] == "5"
    live = Figures(await (await client.get(f"/dashboard?{span}&channel=live")).text())
    assert _columns(live.tables["platform-table"], TABLE) == _as_shown(
        expected(shop.ledger, "platform", channel="live"), TABLE)
    products = Figures(await (await client.get(f"/dashboard/products?{span}")).text())
    want_products = expected(shop.ledger, "product")
    on_page = {k: v for k, v in products.tables["product-table"].items() if k in want_products}
    assert set(on_page) == set(want_products)
    assert on_page == _as_shown(want_products, tuple(on_page[str(tea)]))
    detail = Figures(await (await client.get(f"/dashboard/products/{mug}?{span}")).text())
    assert _columns(detail.tables["day-table"], TABLE) == _as_shown(
        expected(shop.ledger, "day", product=mug), TABLE)
    for by in ("platform", "channel", "product", "day"):
        download = await client.get(f"/dashboard/export.csv?by={by}&{span}")
        assert _from_csv(await download.text(), by) == expected(shop.ledger, by), by
    assert tea != mug


# --- QR codes, read back by an independent decoder ------------------------------------------
def _svg_png(svg: str) -> bytes:
    """Draw a QR code's SVG path (segno's: M/m moves, h runs) as a PNG zbar can read.

    Plain SVG path geometry, no QR knowledge: every run of the path is a stroke one module
    high, centred on its y.
    """
    path = re.search(r"<path\b[^>]*\bd=\"([^\"]+)\"", svg)
    assert path, svg[:200]
    modules: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, numbers in re.findall(r"([A-Za-z])([^A-Za-z]*)", path.group(1)):
        values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", numbers)]
        if command == "M":
            x, y = values
        elif command == "m":
            x, y = x + values[0], y + values[1]
        elif command == "h":
            run = values[0]
            for column in range(int(min(x, x + run)), int(max(x, x + run))):
                modules.add((column, int(y - 0.5)))
            x += run
        else:
            raise AssertionError(f"a path command this drawing does not know: {command}")
    size = max(max(c, r) for c, r in modules) + 5  # and a quiet zone of 4 on each side
    scale = 6
    raw = b""
    for py in range(size * scale):
        row = bytes(0 if (px // scale, py // scale) in modules else 255
                    for px in range(size * scale))
        raw += b"\x00" + row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size * scale, size * scale, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


async def test_every_qr_code_reads_back_as_the_link_the_test_expects(
        shop: Shop, zbar: str) -> None:  # noqa: F811
    client, tenant = shop.client, shop.tenant
    product, code = await _product(shop, "Tea", {"web": {"url": "https://shop.example.com/t"}})
    link = f"{PUBLIC}/p/{code}"  # the public URL and the code: nothing of the renderer's

    async def body(url: str, **headers: str) -> bytes:
        resp = await client.get(url, headers=headers)
        assert resp.status == 200, (url, resp.status)
        return await resp.read()

    auth = tenant.auth
    assert decode_qr(zbar, await body(f"/api/products/{product}/qr.png", **auth)) == [link]
    assert decode_qr(zbar, await body(f"/api/products/{product}/qr.png?ch=live", **auth)) == [
        f"{link}?ch=live"]
    svg = (await body(f"/api/products/{product}/qr.svg?ch=poster", **auth)).decode()
    assert decode_qr(zbar, _svg_png(svg)) == [f"{link}?ch=poster"]
    # The landing page a desktop shopper sees carries the link to scan with a phone.
    landing = (await body(f"/p/{code}", **{"User-Agent": DESKTOP_UA})).decode()
    assert decode_qr(zbar, _svg_png(landing[landing.index("<svg"):])) == [link]
    # The dashboard's product page and its downloads.
    await add_user(client, "acme", "anna@example.com")
    assert (await login(client, "anna@example.com")).status == 303
    page = (await body(f"/dashboard/products/{product}?qr_ch=spring_live")).decode()
    assert decode_qr(zbar, _svg_png(page[page.index("<svg"):])) == [f"{link}?ch=spring_live"]
    assert decode_qr(zbar, await body(f"/dashboard/products/{product}/qr.png?ch=spring_live")) == [
        f"{link}?ch=spring_live"]
    svg = (await body(f"/dashboard/products/{product}/qr.svg")).decode()
    assert decode_qr(zbar, _svg_png(svg)) == [link]
