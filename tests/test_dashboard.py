"""The marketing dashboard over loopback: logins, sessions, CSRF, lockout, and figures that
are the stats API's own for the same filters."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CLOCK, RECORDER, STORE
from gateway.store import User
from gateway.users import MAX_FAILURES, hash_password

from .conftest import (
    BOT_UA,
    DESKTOP_UA,
    PRODUCT,
    TAOBAO_UA,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI")
PASSWORD = "correct horse battery"
ACQUISITION = "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def dash(aiohttp_client: ClientFactory, tmp_path: Path) -> Client:
    """A gateway whose public URL is plain http, as on a laptop (cookies not Secure)."""
    return await aiohttp_client(create_app(make_settings(tmp_path, server__public_url="")))


async def add_user(client: Client, merchant: str, email: str, role: str = "marketing") -> None:
    assert client.app is not None
    await client.app[STORE].create_user(User(email, merchant, role,  # type: ignore[arg-type]
                                             hash_password(PASSWORD)))


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def login(client: Client, email: str, password: str = PASSWORD, *,
                next_url: str = "/dashboard", **headers: str) -> ClientResponse:
    page = await client.get("/dashboard/login")
    assert page.status == 200
    return await client.post("/dashboard/login", allow_redirects=False, headers=headers, data={
        "csrf": csrf_of(await page.text()), "email": email, "password": password,
        "next": next_url})


class Figures(HTMLParser):
    """The figures a person reads on a page: each table's rows, and the total tiles."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        self.tiles: dict[str, str] = {}
        self._table: dict[str, dict[str, str]] | None = None
        self._row: dict[str, str] | None = None
        self._metric: str | None = None
        self._text = ""
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id"):
            self._table = self.tables.setdefault(str(found["id"]), {})
        elif tag == "tr" and self._table is not None and "data-key" in found:
            self._row = self._table.setdefault(str(found["data-key"]), {})
        elif "data-metric" in found:
            self._metric, self._text = str(found["data-metric"]), ""

    def handle_data(self, data: str) -> None:
        if self._metric:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._metric and tag in ("td", "div"):
            (self._row if self._row is not None else self.tiles)[self._metric] = self._text.strip()
            self._metric = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None


RATE_PARTS = {"open_rate": ("storefront_opens", "clicks"), "entry_rate": ("entries", "clicks"),
              "add_rate": ("adds", "entries")}


def shown(row: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, str]:
    """How the dashboard prints an API row's figures: 1,234 and 12.5%."""
    out = {}
    for metric in metrics:
        value = row[metric]
        if metric.endswith("_rate"):
            # The ratio of the row's counts, rounded once (not the API's 4-place rate).
            part, whole = RATE_PARTS[metric]
            out[metric] = f"{row[part] / row[whole]:.1%}" if row[whole] else "—"
        else:
            out[metric] = f"{value:,}"
    return out


TABLE_METRICS = ("clicks", "unique_visitors", "bot_clicks", "redirects", "landings", "guides",
                 "storefront_opens", "entries", "adds", "chats", "lost_contacts", "open_rate",
                 "entry_rate", "add_rate")
PRODUCT_METRICS = ("clicks", "unique_visitors", "storefront_opens", "entries", "adds",
                   "add_rate")


async def shop_traffic(client: Client, tenant: Tenant) -> tuple[int, int]:
    """Real shoppers on two products, through the real routes: clicks from four apps (some
    tagged with a channel), storefront opens, WeCom entries, a bot. Returns the product ids."""
    tea = await create_product(client, tenant)
    mug = await create_product(client, tenant, {
        "title": "手作陶瓷杯", "targets": {"jd": {"sku": "100000000009"},
                                        "web": {"url": "https://shop.example.com/mug"}}})
    resp = await client.put("/api/entry", json={"kind": "acquisition_link", "url": ACQUISITION},
                            headers=tenant.auth)
    assert resp.status == 200, await resp.text()

    async def visit(code: str, ua: str, query: str = "", visitor: str = "") -> str:
        headers = {"User-Agent": ua, **({"Cookie": f"ll_v={visitor}"} if visitor else {})}
        client.session.cookie_jar.clear()
        resp = await client.get(f"/p/{code}{query}", headers=headers, allow_redirects=False)
        return await resp.text()

    for _ in range(2):
        await visit(tea["code"], TAOBAO_UA, "?ch=live")
    for _ in range(3):
        page = await visit(tea["code"], WECHAT_UA, visitor="WeChatVisitor001")
    for hop in re.findall(r'href="(/[oe]/[^"]+)"', page):  # JD, the web shop, WeCom
        client.session.cookie_jar.clear()
        await client.get(hop.replace("&amp;", "&"), headers={"User-Agent": WECHAT_UA},
                         allow_redirects=False)
    desktop = await visit(tea["code"], DESKTOP_UA, "?ch=live")
    web_hop = re.search(r'href="(/o/[^"]+/web\?c=[^"]+)"', desktop)
    assert web_hop
    await client.get(web_hop.group(1), headers={"User-Agent": DESKTOP_UA},
                     allow_redirects=False)
    await visit(tea["code"], BOT_UA)
    await visit(mug["code"], WECHAT_UA, "?ch=poster")
    await visit(mug["code"], DESKTOP_UA)
    assert client.app is not None
    await client.app[RECORDER].flush()
    client.session.cookie_jar.clear()
    return tea["id"], mug["id"]


async def api_stats(client: Client, tenant: Tenant, query: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/stats?{query}", headers=tenant.marketing_auth)
    assert resp.status == 200, await resp.text()
    rows: list[dict[str, Any]] = (await resp.json())["rows"]
    return rows


async def api_total(client: Client, tenant: Tenant, query: str) -> dict[str, Any]:
    resp = await client.get(f"/api/stats?{query}", headers=tenant.marketing_auth)
    assert resp.status == 200, await resp.text()
    total: dict[str, Any] = (await resp.json())["total"]
    return total


async def page_figures(client: Client, url: str) -> Figures:
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 200, (url, resp.status, await resp.text())
    return Figures(await resp.text())


# --- logging in -----------------------------------------------------------------------------
async def test_a_marketing_user_logs_in_and_gets_an_httponly_samesite_session(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    resp = await dash.get("/dashboard/products?platform=jd", allow_redirects=False)
    assert resp.status == 303
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/dashboard/login"
    assert parse_qs(location.query) == {"next": ["/dashboard/products?platform=jd"]}
    page = await dash.get(resp.headers["Location"])
    double_submit = page.cookies["ll_login_csrf"]
    assert double_submit["httponly"] and double_submit["samesite"] == "Strict"
    assert double_submit.value == csrf_of(await page.text())
    resp = await dash.post("/dashboard/login", allow_redirects=False, data={
        "csrf": double_submit.value, "email": "Anna@Example.com", "password": PASSWORD,
        "next": "/dashboard/products?platform=jd"})
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/products?platform=jd"
    session = resp.cookies["ll_session"]
    assert session["httponly"] and session["samesite"] == "Lax"
    assert session["path"] == "/dashboard" and not session["secure"]
    home = await dash.get("/dashboard")
    assert home.status == 200
    text = await home.text()
    assert "Acme" in text and "anna@example.com（市场）" in text
    # One script, our own file (the console's copy buttons): nothing inline, nothing else.
    assert re.findall(r"<script[^>]*>", text) == [
        re.search(r'<script src="/dashboard/static/console\.js\?v=[0-9a-f]{12}" defer>',
                  text).group(0)]  # type: ignore[union-attr]
    assert "script-src 'self';" in home.headers["Content-Security-Policy"]
    assert "default-src 'none'" in home.headers["Content-Security-Policy"]


async def test_the_session_cookie_is_secure_behind_https(client: Client) -> None:
    await add_tenant(client, "acme")
    await add_user(client, "acme", "anna@example.com")
    page = await client.get("/dashboard/login")
    token = page.cookies["ll_login_csrf"].value
    assert page.cookies["ll_login_csrf"]["secure"]
    resp = await client.post("/dashboard/login", allow_redirects=False,
                             headers={"Cookie": f"ll_login_csrf={token}"},
                             data={"csrf": token, "email": "anna@example.com",
                                   "password": PASSWORD})
    assert resp.status == 303 and resp.cookies["ll_session"]["secure"]


async def test_wrong_password_and_unknown_email_read_the_same(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    wrong = await login(dash, "anna@example.com", "not the password")
    unknown = await login(dash, "nobody@example.com", PASSWORD)
    assert wrong.status == unknown.status == 401
    assert "ll_session" not in wrong.cookies and "ll_session" not in unknown.cookies

    def message(page: str) -> str:
        found = re.search(r'id="login-error">([^<]+)<', page)
        assert found, page
        return found.group(1)

    assert message(await wrong.text()) == message(await unknown.text())
    assert "邮箱或密码不正确" in message(await wrong.text())


async def test_five_wrong_passwords_lock_the_login(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    for _ in range(MAX_FAILURES):
        assert (await login(dash, "anna@example.com", "guess guess guess")).status == 401
    refused = await login(dash, "anna@example.com", PASSWORD)
    assert refused.status == 401 and "ll_session" not in refused.cookies
    assert (await dash.get("/dashboard", allow_redirects=False)).status == 303
    assert dash.app is not None
    user = await dash.app[STORE].get_user("anna@example.com")
    assert user is not None and user.locked(time.time()) and user.last_login_at is None


async def test_forms_without_their_csrf_token_or_from_elsewhere_are_refused(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    page = await dash.get("/dashboard/login")
    token = csrf_of(await page.text())
    form = {"email": "anna@example.com", "password": PASSWORD}
    for data, headers in [
        (form, {}),  # no token
        ({**form, "csrf": "x" * 43}, {}),  # not the cookie's token
        ({**form, "csrf": token}, {"Origin": "https://evil.example.net"}),
        ({**form, "csrf": token}, {"Origin": "null"}),
    ]:
        resp = await dash.post("/dashboard/login", data=data, headers=headers,
                               allow_redirects=False)
        assert resp.status == 403 and "ll_session" not in resp.cookies
        assert "登录表单已过期" in await resp.text()
    # Without the double-submit cookie, the form's token alone is not enough either.
    dash.session.cookie_jar.clear()
    resp = await dash.post("/dashboard/login", data={**form, "csrf": token},
                           allow_redirects=False)
    assert resp.status == 403
    ok = await login(dash, "anna@example.com",
                     **{"Origin": f"http://{dash.host}:{dash.port}"})
    assert ok.status == 303


async def test_logout_needs_the_session_csrf_token_and_voids_the_session(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    resp = await login(dash, "anna@example.com")
    cookie = resp.cookies["ll_session"].value
    page = await (await dash.get("/dashboard")).text()
    refused = await dash.post("/dashboard/logout", data={"csrf": "forged-token-forged-token"},
                              allow_redirects=False)
    assert refused.status == 403 and "安全校验" in await refused.text()
    assert (await dash.get("/dashboard", allow_redirects=False)).status == 200
    out = await dash.post("/dashboard/logout", data={"csrf": csrf_of(page)},
                          allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/dashboard/login?bye=1"
    assert "你已退出登录" in await (await dash.get("/dashboard/login?bye=1")).text()
    # The old cookie, replayed, no longer opens the dashboard.
    dash.session.cookie_jar.clear()
    replay = await dash.get("/dashboard", headers={"Cookie": f"ll_session={cookie}"},
                            allow_redirects=False)
    assert replay.status == 303 and replay.headers["Location"].startswith("/dashboard/login")
    assert (await login(dash, "anna@example.com")).status == 303  # logging in again works


async def test_after_login_only_our_own_pages_are_next(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    for evil in ("https://evil.example.net/", "//evil.example.net/x", "/dashboardx",
                 "/dashboard/../api/products", "javascript:alert(1)"):
        dash.session.cookie_jar.clear()
        resp = await login(dash, "anna@example.com", next_url=evil)
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard", evil


# --- who may do what --------------------------------------------------------------------------
async def test_a_session_reads_figures_but_the_api_never_takes_it(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    product = await create_product(dash, acme)
    for role in ("marketing", "merchant"):
        email = f"{role}@example.com"
        await add_user(dash, "acme", email, role)
        dash.session.cookie_jar.clear()
        session = (await login(dash, email)).cookies["ll_session"].value
        cookie = {"Cookie": f"ll_session={session}"}
        assert (await dash.get("/dashboard", headers=cookie)).status == 200
        resp = await dash.post("/api/products", json=PRODUCT, headers=cookie)
        assert resp.status == 401
        resp = await dash.patch(f"/api/products/{product['id']}", json={"title": "x"},
                                headers=cookie)
        assert resp.status == 401
        assert (await dash.get("/api/stats", headers=cookie)).status == 401
        # Nor does a session token pass as a bearer token.
        bearer = {"Authorization": f"Bearer {session}"}
        assert (await dash.post("/api/products", json=PRODUCT, headers=bearer)).status == 401
    # And an API token is no session.
    dash.session.cookie_jar.clear()
    resp = await dash.get("/dashboard", headers={"Cookie": f"ll_session={acme.token}"},
                          allow_redirects=False)
    assert resp.status == 303
    # A marketing token reads stats but cannot change products (the API's own rule).
    assert (await dash.get("/api/stats", headers=acme.marketing_auth)).status == 200
    assert (await dash.post("/api/products", json=PRODUCT,
                            headers=acme.marketing_auth)).status == 403
    listing = await (await dash.get("/api/products", headers=acme.auth)).json()
    assert [p["title"] for p in listing["items"]] == [PRODUCT["title"]]


async def test_no_one_sees_another_merchants_figures(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    tea, _mug = await shop_traffic(dash, acme)
    await add_tenant(dash, "rival")
    await add_user(dash, "rival", "spy@rival.example.com")
    assert (await login(dash, "spy@rival.example.com")).status == 303
    overview = await (await dash.get("/dashboard")).text()
    assert "这段时间还没有访问" in overview and "明前龙井" not in overview
    assert Figures(overview).tiles["clicks"] == "0"
    for url in (f"/dashboard/products/{tea}", f"/dashboard/products/{tea}/qr.png",
                f"/dashboard/products/{tea}/qr.svg"):
        resp = await dash.get(url)
        assert resp.status == 404 and "找不到这个页面" in await resp.text()
    products = await (await dash.get(f"/dashboard/products?product={tea}")).text()
    assert "明前龙井" not in products
    csv = await (await dash.get(f"/dashboard/export.csv?by=platform&product={tea}")).text()
    assert csv.splitlines()[1:] == []
    assert "明前龙井" not in await (await dash.get("/dashboard/export.csv?by=product")).text()


async def test_a_product_id_no_store_can_hold_is_no_product(dash: Client) -> None:
    """Found by the hostile sweep: /dashboard/products/<21 digits> reached SQLite, which
    raised OverflowError, a 500; int() also took "1_0" and Arabic-Indic digits for 10 and 1."""
    acme = await add_tenant(dash, "acme")
    tea, _mug = await shop_traffic(dash, acme)
    await add_tenant(dash, "rival")
    await add_user(dash, "acme", "anna@example.com")
    assert (await login(dash, "anna@example.com")).status == 303
    assert (await dash.get(f"/dashboard/products/{tea}")).status == 200
    for product_id in ("9" * 21, str(2**63), f"{tea}_0", "%D9%A1", "+1", f"0{tea} "):
        for url in (f"/dashboard/products/{product_id}",
                    f"/dashboard/products/{product_id}/qr.svg"):
            resp = await dash.get(url)
            assert resp.status == 404 and "找不到这个页面" in await resp.text(), url


# --- the figures ----------------------------------------------------------------------------
async def test_dashboard_figures_equal_the_stats_api(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    tea, mug = await shop_traffic(dash, acme)
    await add_user(dash, "acme", "anna@example.com")
    assert (await login(dash, "anna@example.com")).status == 303
    assert dash.app is not None
    today = dash.app[CLOCK].today().isoformat()
    filter_sets = ["", "platform=wechat", "channel=live", f"product={tea}",
                   f"from={today}&to={today}", "channel=live&platform=taobao",
                   f"product={mug}&channel=poster", "platform=douyin"]
    seen_rows = 0
    for filters in filter_sets:
        page = await page_figures(dash, f"/dashboard?{filters}")
        rows = await api_stats(dash, acme, f"by=platform&{filters}")
        expected = {r["platform"]: shown(r, TABLE_METRICS) for r in rows}
        assert page.tables.get("platform-table", {}) == expected, filters
        seen_rows += len(rows)
        # The tiles are the API's total: unique visitors distinct over all rows, not summed.
        total = await api_total(dash, acme, f"by=platform&{filters}")
        for metric in ("clicks", "unique_visitors", "storefront_opens", "entries", "adds",
                       "chats"):
            assert page.tiles[metric] == f"{total[metric]:,}", (filters, metric)
        channels = await api_stats(dash, acme, f"by=channel&{filters}")
        assert page.tables.get("channel-table", {}) == {
            r["channel"]: shown(r, TABLE_METRICS) for r in channels}, filters
        products = await page_figures(dash, f"/dashboard/products?{filters}")
        by_product = await api_stats(dash, acme, f"by=product&{filters}")
        assert {k: v for k, v in products.tables["product-table"].items()
                if v["clicks"] != "0"} == {
            str(r["product_id"]): shown(r, PRODUCT_METRICS)
            for r in by_product if r["clicks"]}, filters
    assert seen_rows > 10  # the traffic reached several platforms and channels
    overview = await api_stats(dash, acme, "by=platform")
    platforms = {r["platform"]: r for r in overview}
    assert set(platforms) == {"taobao", "wechat", "web"}
    assert platforms["wechat"]["storefront_opens"] == 2 and platforms["wechat"]["entries"] == 1
    assert platforms["web"]["bot_clicks"] == 1
    for product in (tea, mug):
        detail = await page_figures(dash, f"/dashboard/products/{product}?channel=live")
        assert detail.tables.get("platform-table", {}) == {
            r["platform"]: shown(r, TABLE_METRICS) for r in await api_stats(
                dash, acme, f"by=platform&product={product}&channel=live")}
        detail = await page_figures(dash, f"/dashboard/products/{product}")
        assert detail.tables["day-table"] == {
            r["day"]: shown(r, TABLE_METRICS) for r in await api_stats(
                dash, acme, f"by=day&product={product}")}


async def test_channels_are_counted_and_filtered_through_the_api(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    await shop_traffic(dash, acme)
    by_channel = {r["channel"]: r for r in await api_stats(dash, acme, "by=channel")}
    assert set(by_channel) == {"", "live", "poster"}
    # Live: two Taobao shoppers sent straight to the item, a desktop one through /o/.
    live = by_channel["live"]
    assert (live["clicks"], live["storefront_opens"], live["redirects"],
            live["landings"]) == (3, 3, 2, 1)
    assert by_channel[""]["entries"] == 1 and by_channel[""]["bot_clicks"] == 1
    live_rows = await api_stats(dash, acme, "by=platform&channel=live")
    assert {r["platform"]: r["clicks"] for r in live_rows} == {"taobao": 2, "web": 1}
    resp = await dash.get("/api/stats?channel=Not-A-Channel", headers=acme.marketing_auth)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "channel"


async def test_the_csv_download_is_what_the_page_shows(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    tea, _mug = await shop_traffic(dash, acme)
    await add_user(dash, "acme", "anna@example.com")
    await login(dash, "anna@example.com")
    for page_url, link_id, api_query in [
        ("/dashboard?channel=live", "csv-platform", "by=platform&channel=live"),
        ("/dashboard?platform=wechat", "csv-channel", "by=channel&platform=wechat"),
        ("/dashboard/products", "csv-product", "by=product"),
        (f"/dashboard/products/{tea}", "csv-day", f"by=day&product={tea}"),
    ]:
        page = await (await dash.get(page_url)).text()
        link = re.search(rf'id="{link_id}" href="([^"]+)"', page)
        assert link, (page_url, link_id)
        download = await dash.get(link.group(1).replace("&amp;", "&"))
        assert download.status == 200 and download.content_type == "text/csv"
        assert download.headers["Content-Disposition"].startswith("attachment;")
        api = await dash.get(f"/api/stats?{api_query}&format=csv", headers=acme.marketing_auth)
        assert await download.text() == await api.text(), page_url
        assert len((await download.text()).splitlines()) > 1


# --- pages a person understands ---------------------------------------------------------------
async def test_empty_states_and_error_pages(dash: Client) -> None:
    await add_tenant(dash, "acme")
    await add_user(dash, "acme", "anna@example.com")
    await login(dash, "anna@example.com")
    overview = await dash.get("/dashboard")
    assert "这段时间还没有访问" in await overview.text()
    assert "还没有商品" in await (await dash.get("/dashboard/products")).text()
    bad = await dash.get("/dashboard?from=2026-13-01&platform=myspace")
    text = await bad.text()
    assert bad.status == 200 and "开始日期填写有误" in text and 'role="alert"' in text
    for url in ("/dashboard/nothing-here", "/dashboard/products/abc", "/dashboard/products/999"):
        resp = await dash.get(url)
        assert resp.status == 404 and "找不到这个页面" in await resp.text(), url
    resp = await dash.get("/dashboard/export.csv?by=weekday")
    assert resp.status == 422 and "无法导出" in await resp.text()
    resp = await dash.get("/dashboard/products/1/qr.png?ch=Bad Channel")
    assert resp.status == 404  # no product 1 for this merchant: nothing said about it


async def test_qr_codes_in_the_dashboard(dash: Client) -> None:
    acme = await add_tenant(dash, "acme")
    product = await create_product(dash, acme)
    await add_user(dash, "acme", "anna@example.com")
    await login(dash, "anna@example.com")
    page = await (await dash.get(f"/dashboard/products/{product['id']}?qr_ch=spring_live")).text()
    assert f"{product['share_url']}?ch=spring_live" in page
    assert "<svg" in page
    png = await dash.get(f"/dashboard/products/{product['id']}/qr.png?ch=spring_live")
    assert png.status == 200 and png.content_type == "image/png"
    assert (await png.read()).startswith(b"\x89PNG")
    svg = await dash.get(f"/dashboard/products/{product['id']}/qr.svg")
    assert svg.status == 200 and svg.content_type == "image/svg+xml"
    bad = await dash.get(f"/dashboard/products/{product['id']}?qr_ch=No Spaces")
    assert "渠道名只能用小写字母" in await bad.text()


async def test_the_stylesheet_is_ours_and_cacheable(dash: Client) -> None:
    login_page = await (await dash.get("/dashboard/login")).text()
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', login_page)
    assert href and href.group(1).startswith("/dashboard/static/dashboard.css?v=")
    assert not re.search(r'(src|href)="(https?:)?//', login_page)  # nothing from elsewhere
    css = await dash.get(href.group(1))
    assert css.status == 200 and css.content_type == "text/css"
    assert "immutable" in css.headers["Cache-Control"]
    assert (await dash.get("/dashboard/static/nope.css")).status == 404

