"""The API the console stands on, over loopback: restore, sales windows, search, the per-app
preview (checked against the share link itself with real User-Agents), bulk import and
export, channels, and the WeCom entry check against a fake WeCom. Two merchants throughout."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import zipfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters import ADAPTERS
from gateway.app import create_app
from gateway.appkeys import RECORDER
from gateway.bulk import XLSX_TYPE, target_columns
from gateway.detect import Detector
from gateway.preview import places

from .conftest import (
    BOT_UA,
    DATA,
    DESKTOP_UA,
    PRODUCT,
    ClientFactory,
    Tenant,
    add_tenant,
    create_product,
    make_settings,
)
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .wait import DEADLINE

Client = TestClient[Any, Any]
SHANGHAI = ZoneInfo("Asia/Shanghai")
TAOBAO_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 AliApp(TB/10.30.0)"


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeWeCom, TestServer]:
    wecom = FakeWeCom()
    return wecom, await aiohttp_server(wecom.app())


@pytest.fixture
async def gw(aiohttp_client: ClientFactory, tmp_path: Path,
             fake: tuple[FakeWeCom, TestServer]) -> Client:
    settings = make_settings(tmp_path, wecom__api_base=str(fake[1].make_url("/cgi-bin")),
                             wecom__timeout_seconds=1.0, server__import_max_bytes=200_000)
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def two(gw: Client) -> tuple[Tenant, Tenant]:
    return (await add_tenant(gw, "acme", ("shop.example.com",)),
            await add_tenant(gw, "other", ("other.example.com",)))


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _clicks(gw: Client, tenant: Tenant) -> int:
    assert gw.app is not None
    await gw.app[RECORDER].flush()
    body = await _json(await gw.get("/api/stats?by=platform", headers=tenant.auth), 200)
    return sum(r["clicks"] + r["bot_clicks"] for r in body["rows"])


# --- retire and restore -------------------------------------------------------------------------
async def test_a_retired_product_comes_back_with_the_same_code(gw: Client,
                                                                two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    made = await create_product(gw, acme)
    share = f"/p/{made['code']}"
    assert (await gw.delete(f"/api/products/{made['id']}", headers=acme.auth)).status == 200
    assert (await gw.get(share, headers={"User-Agent": TAOBAO_UA})).status == 410
    # Marketing may not restore; another merchant does not even see it.
    assert (await gw.post(f"/api/products/{made['id']}/restore",
                          headers=acme.marketing_auth)).status == 403
    assert (await gw.post(f"/api/products/{made['id']}/restore",
                          headers=other.auth)).status == 404
    back = await _json(await gw.post(f"/api/products/{made['id']}/restore", headers=acme.auth),
                       200)
    assert (back["code"], back["status"], back["state"]) == (made["code"], "active", "live")
    resp = await gw.get(share, headers={"User-Agent": TAOBAO_UA}, allow_redirects=False)
    assert resp.status == 302 and "600000000001" in resp.headers["Location"]
    # While retired it could not change; restored, it can.
    assert (await gw.patch(f"/api/products/{made['id']}", json={"title": "新标题"},
                           headers=acme.auth)).status == 200


# --- sales windows ------------------------------------------------------------------------------
def _local(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).replace(tzinfo=None).isoformat(timespec="minutes")


async def test_a_window_shows_not_yet_and_ended_pages_and_counts_the_clicks(
        gw: Client, two: tuple[Tenant, Tenant]) -> None:
    acme, _ = two
    now = datetime.now(SHANGHAI)
    soon = await create_product(gw, acme, {**PRODUCT, "slug": "soon-tea",
                                           "valid_from": _local(now + timedelta(days=2))})
    over = await create_product(gw, acme, {**PRODUCT, "slug": "over-tea",
                                           "valid_from": _local(now - timedelta(days=9)),
                                           "valid_until": _local(now - timedelta(days=1))})
    open_ = await create_product(gw, acme, {**PRODUCT, "slug": "open-tea",
                                            "valid_until": _local(now + timedelta(days=1))})
    assert (soon["state"], over["state"], open_["state"]) == ("scheduled", "ended", "live")
    # A time without an offset is the dashboard's time zone, and answered with its offset.
    assert soon["valid_from"].endswith("+08:00") and soon["valid_until"] is None
    start = datetime.fromisoformat(soon["valid_from"])
    assert abs((start - (now + timedelta(days=2))).total_seconds()) < 61

    page = await gw.get("/p/soon-tea", headers={"User-Agent": TAOBAO_UA}, allow_redirects=False)
    text = await page.text()
    assert page.status == 200 and "还没开始" in text and 'data-state="scheduled"' in text
    assert f"{start.month}月{start.day}日 {start:%H:%M} 开始" in text
    page = await gw.get("/p/over-tea", headers={"User-Agent": DESKTOP_UA})
    assert page.status == 410 and "已经结束" in await page.text()
    # Inside its window a product is sent on as ever, and a bot still gets the preview card.
    assert (await gw.get("/p/open-tea", headers={"User-Agent": TAOBAO_UA},
                         allow_redirects=False)).status == 302
    assert "og:title" in await (await gw.get("/p/soon-tea", headers={"User-Agent": BOT_UA})).text()
    # The storefront hop can't be used to get round the window either.
    hop = await gw.get("/o/soon-tea/taobao", headers={"User-Agent": TAOBAO_UA},
                       allow_redirects=False)
    assert hop.status == 200 and "还没开始" in await hop.text()
    assert await _clicks(gw, acme) == 4  # not yet, ended, sent on, and the bot
    rows = (await _json(await gw.get("/api/stats?by=platform", headers=acme.auth), 200))["rows"]
    # The two outside their window are clicks whose outcome is neither a redirect nor a page.
    assert [sum(r[m] for r in rows) for m in ("clicks", "redirects", "landings", "guides")] == [
        3, 1, 0, 0]


async def test_windows_are_checked_whole(gw: Client, two: tuple[Tenant, Tenant]) -> None:
    acme, _ = two
    bad = await gw.post("/api/products", headers=acme.auth, json={
        **PRODUCT, "valid_from": "2026-06-18T20:00", "valid_until": "2026-06-18T19:00"})
    assert (await _json(bad, 422))["error"]["field"] == "valid_until"
    for value in ("2026-06-18", "next week", "2026-02-30T10:00", "1990-01-01T00:00", 1750000000):
        resp = await gw.post("/api/products", headers=acme.auth,
                             json={**PRODUCT, "valid_from": value})
        assert (await _json(resp, 422))["error"] == {
            "code": "invalid_field", "field": "valid_from",
            "message": (await resp.json())["error"]["message"]}
    made = await create_product(gw, acme, {**PRODUCT, "valid_from": "2030-01-01T00:00+08:00"})
    # A new end is judged against the start stored before.
    resp = await gw.patch(f"/api/products/{made['id']}", headers=acme.auth,
                          json={"valid_until": "2029-12-31T00:00+08:00"})
    assert (await _json(resp, 422))["error"]["field"] == "valid_until"
    changed = await _json(await gw.patch(f"/api/products/{made['id']}", headers=acme.auth,
                                         json={"valid_from": None}), 200)
    assert changed["valid_from"] is None and changed["state"] == "live"


# --- search -------------------------------------------------------------------------------------
async def test_the_list_searches_and_filters_by_state(gw: Client,
                                                       two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    await create_product(gw, acme, {**PRODUCT, "title": "明前龙井", "slug": "longjing"})
    cup = await create_product(gw, acme, {**PRODUCT, "title": "Tea cup", "slug": "cup-001"})
    await create_product(gw, other, {**PRODUCT, "title": "龙井 too",
                                     "targets": {"jd": {"sku": "12345"}}})
    await gw.delete(f"/api/products/{cup['id']}", headers=acme.auth)

    async def codes(query: str) -> list[str]:
        body = await _json(await gw.get(f"/api/products?{query}", headers=acme.marketing_auth),
                           200)
        return [p["code"] for p in body["items"]]

    assert await codes("q=龙井") == ["longjing"]
    assert await codes("q=CUP") == ["cup-001"]
    assert await codes("state=retired") == ["cup-001"]
    assert await codes("state=live") == ["longjing"]
    bad = await gw.get("/api/products?state=gone", headers=acme.auth)
    assert (await _json(bad, 422))["error"]["field"] == "state"


# --- what each app shows ------------------------------------------------------------------------
def _agents() -> dict[tuple[str, str], str]:
    """(place, os) -> a real User-Agent from tests/data/ua that detects as that place; where
    the corpus has none (tests/data/README.md says which apps), the adapter's own samples."""
    detector = Detector()
    found = _corpus_agents(detector)
    for adapter in ADAPTERS:
        for ua in adapter.ua_samples:
            seen = detector.user_agent(ua)
            if seen.platform == adapter.platform and seen.os in ("ios", "android"):
                found.setdefault((adapter.platform, seen.os), ua)
    return found


def _corpus_agents(detector: Detector) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    with open(DATA / "ua" / "corpus.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            seen = detector.user_agent(row["user_agent"])
            if seen.bot or seen.os not in ("ios", "android", "windows", "macos"):
                continue
            place = {"browser_mobile": "mobile_browser",
                     "browser_desktop": "desktop_browser"}.get(row["expected"], row["expected"])
            if place == "desktop_browser" and not seen.mobile:
                found.setdefault((place, "any"), row["user_agent"])
            elif seen.mobile and seen.os in ("ios", "android") and (
                    seen.platform == place or (place == "mobile_browser"
                                               and seen.platform == "web")):
                found.setdefault((place, seen.os), row["user_agent"])
    return found


MIXED = {"title": "全平台好物", "targets": {
    "taobao": {"item_id": "600000000001", "share_token": "￥AbC123￥"},
    "jd": {"sku": "100000000001"},
    "douyin": {"product_id": "3500000000000000001"},
    "wechat_miniprogram": {"appid": "wx0123456789abcdef", "path": "pages/item/index"},
    "web": {"url": "https://shop.example.com/tea"}}}


async def test_the_preview_is_what_the_share_link_answers_in_each_app(
        gw: Client, two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    made = await create_product(gw, acme, MIXED)
    agents = _agents()
    compared = 0
    for os in ("ios", "android"):
        body = await _json(await gw.get(f"/api/products/{made['id']}/preview?os={os}",
                                        headers=acme.marketing_auth), 200)
        assert [p["place"] for p in body["places"]] == [p.key for p in places()]
        assert len(body["places"]) == 20  # 18 apps, a phone's browser, a desktop's
        for place in body["places"]:
            ua = agents.get((place["place"], "any" if not place["mobile"] else os))
            if ua is None:
                continue  # the corpus has no such row (the adapters' docs say which)
            compared += 1
            resp = await gw.get(f"/p/{made['code']}", headers={"User-Agent": ua},
                                allow_redirects=False)
            if place["outcome"] == "redirect":
                assert resp.status == 302, (place, ua)
                assert resp.headers["Location"] == place["redirect"], place["place"]
                continue
            page = await resp.text()
            assert resp.status == 200, (place, ua)
            assert ('id="guide"' in page) == (place["outcome"] == "guide"), place["place"]
            shown = re.findall(r'<a class="btn alt" data-platform="([a-z_]+)"', page)
            assert shown == [b["platform"] for b in place["buttons"]], place["place"]
            blocked = re.findall(r'class="blocked" data-platform="([a-z_]+)"', page)
            assert blocked == [b["platform"] for b in place["blocked"]
                               ] + [b["platform"] for b in place["phone_only"]], place["place"]
    assert compared >= 37, sorted(agents)
    by_place = {p["place"]: p for p in body["places"]}
    assert by_place["taobao"]["outcome"] == "redirect"
    assert by_place["wechat"]["outcome"] in ("redirect", "guide")
    assert by_place["desktop_browser"]["qr"]
    assert (await gw.get(f"/api/products/{made['id']}/preview",
                         headers=other.auth)).status == 404
    assert (await gw.get(f"/api/products/{made['id']}/preview?os=symbian",
                         headers=acme.auth)).status == 422


# --- bulk import and export ---------------------------------------------------------------------
def _rows(n: int, bad: dict[int, dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    header = ["title", "price", "slug", "targets.taobao.item_id", "targets.jd.sku",
              "targets.web.url"]
    rows = []
    for i in range(n):
        row = {"title": f"茶 {i}", "price": "9.90", "slug": f"tea-{i:03d}",
               "targets.taobao.item_id": f"60000000{i:04d}", "targets.jd.sku": f"1000{i:04d}",
               "targets.web.url": f"https://shop.example.com/t/{i}"}
        row.update(bad.get(i, {}))
        rows.append([row[h] for h in header])
    return header, rows


def _xlsx(header: list[str], rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _csv(header: list[str], rows: list[list[str]], encoding: str = "utf-8-sig") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


async def _import(gw: Client, tenant: Tenant, data: bytes, content_type: str, *,
                  dry_run: bool) -> Any:
    return await gw.post(f"/api/products/import?dry_run={'true' if dry_run else 'false'}",
                         data=data, headers={**tenant.auth, "Content-Type": content_type})


async def test_an_import_names_its_bad_rows_and_writes_nothing_until_they_are_fixed(
        gw: Client, two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    bad = {3: {"targets.jd.sku": "12a"}, 11: {"targets.web.url": "https://evil.example.net/x"}}
    header, rows = _rows(20, bad)
    data = _xlsx(header, rows)
    dry = await _json(await _import(gw, acme, data, XLSX_TYPE, dry_run=True), 200)
    assert (dry["dry_run"], dry["valid"], dry["invalid"], dry["created"]) == (True, 18, 2, 0)
    wrong = [(r["row"], [(e["field"], e["code"]) for e in r["errors"]])
             for r in dry["rows"] if r["status"] == "error"]
    assert wrong == [(5, [("targets.jd.sku", "invalid_field")]),
                     (13, [("targets.web.url", "host_not_allowed")])]
    # The same errors as the API gives for the same bodies.
    for number, column, code in ((5, "targets.jd.sku", "invalid_field"),
                                 (13, "targets.web.url", "host_not_allowed")):
        body: dict[str, Any] = {"title": "x", "targets": {}}
        for name, value in zip(header, rows[number - 2], strict=True):
            if name.startswith("targets."):
                _, platform, field = name.split(".")
                body["targets"].setdefault(platform, {})[field] = value
        api = await _json(await gw.post("/api/products", json=body, headers=acme.auth), 422)
        assert (api["error"]["field"], api["error"]["code"]) == (column, code)
    assert (await _json(await gw.get("/api/products", headers=acme.auth), 200))["items"] == []
    # Without dry_run: all or nothing.
    refused = await _json(await _import(gw, acme, data, XLSX_TYPE, dry_run=False), 422)
    assert refused == {"error": {
        "code": "import_rejected", "field": "file", "message":
        "2 of 20 rows have errors (row 5 targets.jd.sku invalid_field; row 13 targets.web.url "
        "host_not_allowed); nothing was written: ?dry_run=true answers every row"}}
    assert (await _json(await gw.get("/api/products", headers=acme.auth), 200))["items"] == []
    fixed = _xlsx(header, _rows(20, {})[1])
    clean = await _json(await _import(gw, acme, fixed, XLSX_TYPE, dry_run=True), 200)
    assert (clean["valid"], clean["invalid"], clean["created"]) == (20, 0, 0)
    assert {r["status"] for r in clean["rows"]} == {"ok"}
    assert (await _json(await gw.get("/api/products", headers=acme.auth), 200))["items"] == []
    done = await _json(await _import(gw, acme, fixed, XLSX_TYPE, dry_run=False), 201)
    assert done["created"] == 20 and {r["status"] for r in done["rows"]} == {"created"}
    listed = await _json(await gw.get("/api/products?limit=100", headers=acme.auth), 200)
    assert sorted(p["code"] for p in listed["items"]) == [f"tea-{i:03d}" for i in range(20)]
    assert (await _json(await gw.get("/api/products", headers=other.auth), 200))["items"] == []
    # Again: every slug is now taken, and said so per row.
    again = await _json(await _import(gw, acme, fixed, XLSX_TYPE, dry_run=True), 200)
    assert {e["code"] for r in again["rows"] for e in r["errors"]} == {"slug_taken"}


async def test_csv_imports_read_excel_s_encodings_and_refuse_what_is_not_a_table(
        gw: Client, two: tuple[Tenant, Tenant]) -> None:
    acme, _ = two
    header, rows = _rows(3, {})
    rows[1][2] = rows[0][2]  # the same slug twice
    for encoding in ("utf-8-sig", "utf-8", "gb18030"):
        dry = await _json(await _import(gw, acme, _csv(header, rows, encoding), "text/csv",
                                        dry_run=True), 200)
        assert [r["title"] for r in dry["rows"]] == ["茶 0", "茶 1", "茶 2"], encoding
        assert [e["code"] for r in dry["rows"] for e in r["errors"]] == ["slug_taken"]
    unknown = await _import(gw, acme, _csv(["title", "targets.taobao.itemid"], [["x", "1"]]),
                            "text/csv", dry_run=True)
    assert (await _json(unknown, 422))["error"]["field"] == "targets.taobao.itemid"
    assert (await _import(gw, acme, b"\x00\x01garbage", "application/pdf",
                          dry_run=True)).status == 415
    assert (await _import(gw, acme, b"PK\x03\x04broken", XLSX_TYPE, dry_run=True)).status == 422
    # A zip bomb is refused from its declared sizes, never unpacked.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\x00" * 20_000_000)
    resp = await _import(gw, acme, bomb.getvalue(), XLSX_TYPE, dry_run=True)
    assert (await _json(resp, 422))["error"]["code"] == "invalid_file"
    big = await _import(gw, acme, b"title\n" + b"x\n" * 150_000, "text/csv", dry_run=True)
    assert big.status == 413
    assert (await _import(gw, acme, _csv(header, _rows(3, {})[1]), "text/csv",
                          dry_run=False)).status == 201
    marketing = await gw.post("/api/products/import", data=b"title\nx\n",
                              headers={**acme.marketing_auth, "Content-Type": "text/csv"})
    assert marketing.status == 403


async def test_the_export_reads_back_and_keeps_text_as_text(gw: Client,
                                                            two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    await create_product(gw, acme, {**PRODUCT, "title": "=HYPERLINK(\"https://evil\")",
                                    "slug": "formula", "valid_until": "2030-01-01T00:00+08:00"})
    await create_product(gw, other, {"title": "Theirs", "slug": "theirs",
                                     "targets": {"jd": {"sku": "12345"}}})
    resp = await gw.get("/api/products/export?format=xlsx", headers=acme.marketing_auth)
    assert resp.status == 200 and resp.content_type == XLSX_TYPE
    sheet = openpyxl.load_workbook(io.BytesIO(await resp.read())).worksheets[0]
    header = [c.value for c in sheet[1]]
    row = {h: c for h, c in zip(header, sheet[2], strict=True)}
    assert sheet.max_row == 2  # the other merchant's product is not in it
    assert row["title"].value == '=HYPERLINK("https://evil")' and row["title"].data_type == "s"
    assert row["slug"].value == "formula" and row["state"].value == "live"
    assert row["valid_until"].value == "2030-01-01T00:00:00+08:00"
    assert row["targets.taobao.item_id"].value == "600000000001"
    text = (await (await gw.get("/api/products/export?format=csv",
                                headers=acme.auth)).read()).decode("utf-8-sig")
    assert list(csv.reader(io.StringIO(text)))[1][0] == "'=HYPERLINK(\"https://evil\")"
    # The template lists every column of every platform, and imports as an empty file.
    template = await gw.get("/api/products/import/template?format=xlsx", headers=acme.auth)
    book = openpyxl.load_workbook(io.BytesIO(await template.read()))
    columns = [c.value for c in book.worksheets[0][1]]
    assert columns[:6] == ["title", "price", "image_url", "slug", "valid_from", "valid_until"]
    assert columns[6:] == target_columns()
    assert book.worksheets[1].title == "说明" and book.worksheets[1].max_row == len(columns) + 1


# --- channels -----------------------------------------------------------------------------------
async def test_channels_are_named_once_per_merchant(gw: Client,
                                                    two: tuple[Tenant, Tenant]) -> None:
    acme, other = two
    made = await _json(await gw.post("/api/channels", json={"name": "spring_live",
                                                            "label": "春季直播"},
                                     headers=acme.auth), 201)
    assert made["name"] == "spring_live"
    for body, status, code in [({"name": "spring_live"}, 409, "channel_exists"),
                               ({"name": "Spring"}, 422, "invalid_field"),
                               ({"name": "taobao"}, 422, "reserved_name"),
                               ({"name": "ok", "label": "a\nb"}, 422, "invalid_field"),
                               ({"name": "ok", "colour": "red"}, 422, "unknown_field")]:
        resp = await gw.post("/api/channels", json=body, headers=acme.auth)
        assert (await _json(resp, status))["error"]["code"] == code, body
    assert (await gw.post("/api/channels", json={"name": "x"},
                          headers=acme.marketing_auth)).status == 403
    await _json(await gw.post("/api/channels", json={"name": "spring_live"},
                              headers=other.auth), 201)
    listed = await _json(await gw.get("/api/channels", headers=acme.marketing_auth), 200)
    assert [(c["name"], c["label"]) for c in listed["items"]] == [("spring_live", "春季直播")]
    assert (await gw.delete("/api/channels/spring_live", headers=acme.auth)).status == 200
    assert (await gw.delete("/api/channels/spring_live", headers=acme.auth)).status == 404
    theirs = await _json(await gw.get("/api/channels", headers=other.auth), 200)
    assert [c["name"] for c in theirs["items"]] == ["spring_live"]


# --- the WeCom entry check ----------------------------------------------------------------------
async def test_the_entry_check_says_what_wecom_answered(
        gw: Client, two: tuple[Tenant, Tenant], fake: tuple[FakeWeCom, TestServer]) -> None:
    acme, other = two
    wecom, _ = fake
    assert (await gw.post("/api/entry/check", headers=acme.auth)).status == 404
    await _json(await gw.put("/api/entry", headers=acme.auth, json={
        "kind": "contact_way", "users": ["zhangsan", "wangwu"], "corp_id": CORP_ID,
        "secret": SECRET, "callback_token": CALLBACK_TOKEN, "encoding_aes_key": AES_KEY}), 200)
    body = await _json(await gw.post("/api/entry/check", headers=acme.auth), 200)
    steps = {s["name"]: s for s in body["steps"]}
    assert not body["ok"] and steps["callback"]["ok"] and steps["gettoken"]["ok"]
    assert not steps["follow_users"]["ok"] and "wangwu" in steps["follow_users"]["message"]
    assert "zhangsan" not in steps["follow_users"]["message"]
    assert "get_follow_user_list" in wecom.calls
    wecom.follow_users.append("wangwu")
    assert (await _json(await gw.post("/api/entry/check", headers=acme.auth), 200))["ok"]
    text = str(body)
    assert SECRET not in text and AES_KEY not in text and wecom.current_token not in text
    # A wrong secret: WeCom's own errcode, and what to do about it.
    await _json(await gw.put("/api/entry", headers=acme.auth, json={
        "kind": "contact_way", "users": ["zhangsan"], "secret": "wrong-secret-000"}), 200)
    body = await _json(await gw.post("/api/entry/check", headers=acme.auth), 200)
    token = {s["name"]: s for s in body["steps"]}["gettoken"]
    assert (token["ok"], token["errcode"]) == (False, 40001) and "Secret" in token["message"]
    assert (await gw.post("/api/entry/check", headers=acme.marketing_auth)).status == 403
    assert (await gw.post("/api/entry/check", headers=other.auth)).status == 404


@contextlib.asynccontextmanager
async def _silent_port() -> AsyncIterator[int]:
    """A port that takes connections and never answers: WeCom behind a firewall that drops
    packets, or hung."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("wecom", ["refused", "silent"])
async def test_the_entry_check_of_a_group_and_of_an_unreachable_wecom(
        aiohttp_client: ClientFactory, tmp_path: Path, wecom: str) -> None:
    async with _silent_port() as silent:
        port = 9 if wecom == "refused" else silent  # 9: discard, nothing listens there
        settings = make_settings(tmp_path, wecom__api_base=f"http://127.0.0.1:{port}/cgi-bin",
                                 wecom__timeout_seconds=0.5)
        gw = await aiohttp_client(create_app(settings))
        acme = await add_tenant(gw, "acme")
        await _json(await gw.put("/api/entry", headers=acme.auth, json={
            "kind": "group", "chat_ids": ["wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA"], "corp_id": CORP_ID,
            "secret": SECRET}), 200)
        # The merchant gets an answer, not a spinner: a WeCom that never answers is given up
        # after wecom.timeout_seconds. DEADLINE bounds a hang, it is no claim about speed.
        try:
            async with asyncio.timeout(DEADLINE):
                body = await _json(await gw.post("/api/entry/check", headers=acme.auth), 200)
        except TimeoutError:
            pytest.fail(f"the check of a {wecom} WeCom did not answer within {DEADLINE:g} s "
                        "(wecom.timeout_seconds is 0.5)")
    steps = {s["name"]: s for s in body["steps"]}
    assert not steps["callback"]["ok"]  # no callback secrets: adds can't be counted
    assert not steps["gettoken"]["ok"] and steps["gettoken"]["errcode"] is None
    assert "wecom.api_base" in steps["gettoken"]["message"]
