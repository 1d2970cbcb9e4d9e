"""The merchant console over loopback: forms named by the API's JSON paths and checked by the
API's own code (the same bad input gives the same error code in both, for every field of
every adapter), inline Chinese errors with values kept, 303 on success, retire and restore,
channels, the WeCom entry point, bulk import, and a marketing login that changes nothing."""

from __future__ import annotations

import io
import re
from html import unescape
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from adapters import ADAPTERS, Adapter
from gateway.app import create_app
from gateway.appkeys import RECORDER, STORE
from gateway.bulk import BASE_COLUMNS, target_columns
from gateway.store import User
from gateway.users import hash_password

from . import test_console_api
from .conftest import ClientFactory, Tenant, add_tenant, create_product, make_settings
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .test_dashboard import PASSWORD, csrf_of, login

Client = TestClient[Any, Any]
fake = test_console_api.fake  # the fake WeCom, served over loopback
TAOBAO_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 AliApp(TB/10.30.0)"
GOOD = {"title": "明前龙井", "targets.taobao.item_id": "600000000001"}


@pytest.fixture
async def gw(aiohttp_client: ClientFactory, tmp_path: Path,
             fake: tuple[FakeWeCom, TestServer]) -> Client:
    settings = make_settings(tmp_path, server__public_url="",
                             wecom__api_base=str(fake[1].make_url("/cgi-bin")),
                             wecom__timeout_seconds=1.0)
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def shops(gw: Client) -> tuple[Tenant, Tenant]:
    """Two merchants, each with a merchant login and a marketing login."""
    assert gw.app is not None
    tenants = (await add_tenant(gw, "acme", ("shop.example.com",)),
               await add_tenant(gw, "other", ("other.example.com",)))
    for tenant in tenants:
        for role in ("merchant", "marketing"):
            await gw.app[STORE].create_user(User(f"{role}@{tenant.id}.cn", tenant.id, role,
                                                 hash_password(PASSWORD)))
    return tenants


async def signed_in(gw: Client, email: str) -> str:
    """Sign in (cookies kept by the client); the session's CSRF token."""
    gw.session.cookie_jar.clear()
    resp = await login(gw, email)
    assert resp.status == 303, await resp.text()
    return csrf_of(await (await gw.get("/dashboard/products")).text())


async def post_form(gw: Client, path: str, data: dict[str, str], csrf: str) -> Any:
    return await gw.post(path, data={"csrf": csrf, **data}, allow_redirects=False)


def errors_of(page: str) -> dict[str, str]:
    """Each inline error on a page: field (a JSON path) -> the API's code."""
    return dict(re.findall(r'class="field-error"[^>]*data-field="([^"]+)" data-code="([^"]*)"',
                           page))


def messages_of(page: str) -> dict[str, str]:
    return {f: unescape(m) for f, m in re.findall(
        r'class="field-error"[^>]*data-field="([^"]+)"[^>]*>([^<]+)<', page)}


def value_of(page: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" type="[^"]+" value="([^"]*)"', page)
    assert found, name
    return unescape(found.group(1))


# --- the product form ----------------------------------------------------------------------------
async def test_bad_fields_are_shown_inline_kept_and_fixed_into_a_303(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    csrf = await signed_in(gw, "merchant@acme.cn")
    form = {"title": "明前龙井 250g", "price": "168", "targets.taobao.item_id": "600000000001",
            "targets.jd.sku": "12a", "targets.wechat_miniprogram.appid": "wx0123456789abcdef",
            "targets.wechat_miniprogram.path": "pages/item/index",
            "targets.web.url": "https://evil.example.net/tea"}
    resp = await post_form(gw, "/dashboard/products/new", form, csrf)
    page = await resp.text()
    assert resp.status == 422
    assert errors_of(page) == {"targets.jd.sku": "invalid_field",
                               "targets.web.url": "host_not_allowed"}
    said = messages_of(page)
    assert said["targets.jd.sku"].startswith("格式不对：京东商品链接") and "100012043978" in said[
        "targets.jd.sku"]
    assert said["targets.web.url"] == "网址必须在你店铺的域名上（shop.example.com）。"
    for name, value in form.items():
        assert value_of(page, name) == value  # what was typed is still there
    assert 'id="form-errors"' in page and page.count("<li>") >= 2
    # Nothing was written.
    assert (await (await gw.get("/api/products", headers=acme.auth)).json())["items"] == []
    fixed = {**form, "targets.jd.sku": "100012043978",
             "targets.web.url": "https://shop.example.com/tea"}
    resp = await post_form(gw, "/dashboard/products/new", fixed, csrf)
    assert resp.status == 303
    made = (await (await gw.get("/api/products", headers=acme.auth)).json())["items"]
    assert resp.headers["Location"] == f"/dashboard/products/{made[0]['id']}"
    assert made[0]["targets"]["wechat_miniprogram"] == {"appid": "wx0123456789abcdef",
                                                        "path": "pages/item/index"}
    assert made[0]["price"] == "168.00"
    page = await (await gw.get(resp.headers["Location"])).text()
    assert 'id="preview-table"' in page and page.count("<li data-place=") == 20
    assert f"/p/{made[0]['code']}" in page


async def test_the_edit_form_changes_what_it_names_and_keeps_the_code(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, other = shops
    made = await create_product(gw, acme, {"title": "Tea", "price": 9, "targets": {
        "taobao": {"item_id": "600000000001"}, "jd": {"sku": "12345"}}})
    theirs = await create_product(gw, other, {"title": "Theirs", "targets": {
        "jd": {"sku": "12345"}}})
    csrf = await signed_in(gw, "merchant@acme.cn")
    page = await (await gw.get(f"/dashboard/products/{made['id']}/edit")).text()
    assert value_of(page, "targets.jd.sku") == "12345" and value_of(page, "price") == "9.00"
    assert 'name="slug" type="text" value="' + made["code"] + '"' in page and "readonly" in page
    resp = await post_form(gw, f"/dashboard/products/{made['id']}/edit", {
        "title": "Tea 2", "price": "", "slug": "sneaky", "targets.taobao.item_id": "600000000001",
        "valid_from": "2030-01-01T10:00"}, csrf)
    assert resp.status == 303 and resp.headers["Location"] == f"/dashboard/products/{made['id']}"
    now = await (await gw.get(f"/api/products/{made['id']}", headers=acme.auth)).json()
    assert (now["title"], now["price"], now["code"], list(now["targets"])) == (
        "Tea 2", None, made["code"], ["taobao"])
    assert now["valid_from"] == "2030-01-01T10:00:00+08:00" and now["state"] == "scheduled"
    # Another merchant's product is not there to edit.
    assert (await gw.get(f"/dashboard/products/{theirs['id']}/edit")).status == 404
    resp = await post_form(gw, f"/dashboard/products/{theirs['id']}/edit", GOOD, csrf)
    assert resp.status == 404
    # An inverted window, inline at the end time.
    resp = await post_form(gw, f"/dashboard/products/{made['id']}/edit", {
        **GOOD, "valid_from": "2030-01-02T10:00", "valid_until": "2030-01-01T10:00"}, csrf)
    page = await resp.text()
    assert resp.status == 422 and errors_of(page) == {"valid_until": "invalid_field"}
    assert messages_of(page)["valid_until"] == "结束时间必须晚于开售时间。"


# --- the same error code in the API and the console -------------------------------------------------
def _valid_target(adapter: Adapter) -> dict[str, str]:
    """The adapter's first alternative, filled with its own examples."""
    return {name: adapter.field_doc(name).example for name in adapter.target_fields[0]}


def _bad_values(adapter: Adapter, name: str) -> list[str]:
    """Values the field must refuse: an off-host or unsafe URL; a control character and a
    length past every limit for any field; and words its own pattern refuses."""
    if name == "url":
        return ["https://evil.example.net/item", "http://item.example.com/x", "javascript:x"]
    bad = ["口令\x01", "x" * 3000]
    pattern = adapter.field_patterns.get(name)
    if pattern is not None:
        bad += [v for v in ("not valid!", "１２３４５６", "<b>") if not re.fullmatch(pattern, v)]
    return bad


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for adapter in ADAPTERS:
        if not adapter.is_target:
            continue
        for name in adapter.form_fields:
            for bad in _bad_values(adapter, name):
                cases.append((adapter.platform, name, bad))
        for group in adapter.target_fields:
            if len(group) > 1:  # half an alternative: this field given, the rest missing
                cases.append((adapter.platform, group[0], "<half>"))
    return cases


BASE_CASES = [("title", ""), ("title", "a\nb"), ("title", "x" * 201), ("price", "abc"),
              ("price", "1.234"), ("price", "-1"), ("image_url", "http://img.example.com/a.jpg"),
              ("image_url", "ftp://x"), ("slug", "a"), ("slug", "-leading"),
              ("valid_from", "tomorrow"), ("valid_from", "2026-06-18"),
              ("valid_until", "1999-01-01T00:00")]


async def _api_error(gw: Client, tenant: Tenant, body: dict[str, Any]) -> tuple[str, str]:
    resp = await gw.post("/api/products", json=body, headers=tenant.auth)
    answer = await resp.json()
    assert resp.status in (400, 409, 422), answer
    return answer["error"]["field"], answer["error"]["code"]


async def _console_errors(gw: Client, form: dict[str, str], csrf: str) -> dict[str, str]:
    resp = await post_form(gw, "/dashboard/products/new", form, csrf)
    page = await resp.text()
    assert resp.status == 422, page[-500:]
    return errors_of(page)


async def test_the_api_and_the_console_give_the_same_error_for_every_field(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    csrf = await signed_in(gw, "merchant@acme.cn")
    checked = 0
    for platform, name, bad in _cases():
        adapter = next(a for a in ADAPTERS if a.platform == platform)
        target = {**_valid_target(adapter), name: bad}
        if bad == "<half>":
            target = {name: adapter.field_doc(name).example}
        field, code = await _api_error(gw, acme, {"title": "x", "targets": {platform: target}})
        form = {"title": "x", **{f"targets.{platform}.{k}": v for k, v in target.items()}}
        assert await _console_errors(gw, form, csrf) == {field: code}, (platform, name, bad)
        checked += 1
    for name, bad in BASE_CASES:
        body: dict[str, Any] = {"title": "x", "targets": {"taobao": {"item_id": "600000000001"}},
                                name: bad}
        field, code = await _api_error(gw, acme, body)
        form = {**GOOD, "title": "x", name: bad}
        assert await _console_errors(gw, form, csrf) == {field: code}, (name, bad)
        checked += 1
    # No platform at all, and a slug someone has.
    field, code = await _api_error(gw, acme, {"title": "x", "targets": {}})
    assert await _console_errors(gw, {"title": "x"}, csrf) == {field: code} == {
        "targets": "missing_field"}
    await create_product(gw, acme, {"title": "x", "slug": "taken-one",
                                     "targets": {"jd": {"sku": "12345"}}})
    field, code = await _api_error(gw, acme, {"title": "x", "slug": "taken-one",
                                              "targets": {"jd": {"sku": "12345"}}})
    assert await _console_errors(gw, {**GOOD, "slug": "taken-one"}, csrf) == {field: code}
    assert checked > 100


# --- retire and restore --------------------------------------------------------------------------
async def test_retire_and_restore_from_the_product_page(gw: Client,
                                                        shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    made = await create_product(gw, acme)
    csrf = await signed_in(gw, "merchant@acme.cn")
    page_path = f"/dashboard/products/{made['id']}"
    resp = await post_form(gw, f"{page_path}/retire", {}, csrf)
    assert resp.status == 303 and resp.headers["Location"] == page_path
    assert (await gw.get(f"/p/{made['code']}", headers={"User-Agent": TAOBAO_UA})).status == 410
    page = await (await gw.get(page_path)).text()
    assert 'data-state="retired"' in page and 'id="restore"' in page and 'id="edit"' not in page
    resp = await post_form(gw, f"{page_path}/restore", {}, csrf)
    assert resp.status == 303
    resp = await gw.get(f"/p/{made['code']}", headers={"User-Agent": TAOBAO_UA},
                        allow_redirects=False)
    assert resp.status == 302  # the same code, the same printed QR codes, working again
    assert 'data-state="live"' in await (await gw.get(page_path)).text()


# --- who may write ---------------------------------------------------------------------------------
async def test_marketing_sees_the_console_and_changes_nothing(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    made = await create_product(gw, acme)
    await gw.put("/api/entry", headers=acme.auth, json={
        "kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"})
    csrf = await signed_in(gw, "marketing@acme.cn")
    for path in ("/dashboard/products", f"/dashboard/products/{made['id']}",
                 "/dashboard/channels", "/dashboard/entry", "/dashboard/import"):
        resp = await gw.get(path)
        page = await resp.text()
        assert resp.status == 200, path
        # No edit control: the only form posting anywhere is the logout.
        assert re.findall(r'<form method="post" action="([^"]+)"', page) == [
            "/dashboard/logout"], path
        assert 'id="new-product"' not in page
    for path in ("/dashboard/products/new", f"/dashboard/products/{made['id']}/edit"):
        assert (await gw.get(path)).status == 403
    writes = [("/dashboard/products/new", GOOD), (f"/dashboard/products/{made['id']}/edit", GOOD),
              (f"/dashboard/products/{made['id']}/retire", {}),
              (f"/dashboard/products/{made['id']}/restore", {}),
              ("/dashboard/channels", {"name": "spring"}),
              ("/dashboard/channels/spring/delete", {}),
              ("/dashboard/entry", {"kind": "static", "qr_url": "https://img.example.com/q.png"}),
              ("/dashboard/entry/check", {})]
    for path, form in writes:
        resp = await post_form(gw, path, form, csrf)
        assert resp.status == 403, path
        assert "没有修改权限" in await resp.text()
    upload = FormData()
    upload.add_field("csrf", csrf)
    upload.add_field("file", b"title,targets.jd.sku\nx,12345\n", filename="p.csv",
                     content_type="text/csv")
    assert (await gw.post("/dashboard/import", data=upload)).status == 403
    after = await (await gw.get(f"/api/products/{made['id']}", headers=acme.auth)).json()
    assert after == {**made, "updated_at": after["updated_at"]} and after["status"] == "active"
    assert (await (await gw.get("/api/products", headers=acme.auth)).json())["items"] == [after]
    entry = await (await gw.get("/api/entry", headers=acme.auth)).json()
    assert entry["kind"] == "acquisition_link"


async def test_every_console_write_needs_the_session_s_token_and_our_origin(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    made = await create_product(gw, acme)
    csrf = await signed_in(gw, "merchant@acme.cn")
    for path, form in [("/dashboard/products/new", GOOD),
                       (f"/dashboard/products/{made['id']}/retire", {}),
                       ("/dashboard/channels", {"name": "spring"}),
                       ("/dashboard/entry", {"kind": "static",
                                             "qr_url": "https://img.example.com/q.png"})]:
        for token, headers in [("", {}), ("x" * 43, {}),
                               (csrf, {"Origin": "https://evil.example.net"})]:
            resp = await gw.post(path, data={"csrf": token, **form}, headers=headers,
                                 allow_redirects=False)
            assert resp.status == 403, (path, token[:4], headers)
    assert (await (await gw.get(f"/api/products/{made['id']}", headers=acme.auth)).json())[
        "status"] == "active"
    assert (await (await gw.get("/api/channels", headers=acme.auth)).json())["items"] == []
    # Signed out: a write goes to the login page, and changes nothing.
    gw.session.cookie_jar.clear()
    resp = await post_form(gw, f"/dashboard/products/{made['id']}/retire", {}, csrf)
    assert resp.status == 303 and resp.headers["Location"].startswith("/dashboard/login")


# --- search and states ---------------------------------------------------------------------------
async def test_the_list_searches_shows_states_and_copies_links(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, other = shops
    await create_product(gw, acme, {"title": "明前龙井", "slug": "longjing",
                                    "targets": {"jd": {"sku": "12345"}}})
    await create_product(gw, acme, {"title": "陶瓷杯", "slug": "cup-1",
                                    "valid_from": "2099-01-01T00:00",
                                    "targets": {"jd": {"sku": "12345"}}})
    await create_product(gw, other, {"title": "龙井 too", "targets": {"jd": {"sku": "12345"}}})
    await signed_in(gw, "merchant@acme.cn")

    def listed(page: str) -> list[str]:
        return re.findall(r'<tr data-key="\d+">\s*<td class="name"><a [^>]+>([^<]+)</a>', page)

    page = await (await gw.get("/dashboard/products?q=龙井")).text()
    assert listed(page) == ["明前龙井"] and "龙井 too" not in page
    assert re.search(r'data-copy="http://[^"]+/p/longjing"', page)
    page = await (await gw.get("/dashboard/products?state=scheduled")).text()
    assert listed(page) == ["陶瓷杯"]
    assert re.search(r'data-state="scheduled"[^>]*>未开始 1<', page)
    page = await (await gw.get("/dashboard/products?q=nothing-like-this")).text()
    assert "没有符合条件的商品" in page


# --- channels --------------------------------------------------------------------------------------
async def test_a_channel_gets_its_links_and_figures(gw: Client,
                                                    shops: tuple[Tenant, Tenant]) -> None:
    acme, other = shops
    made = await create_product(gw, acme, {"title": "Tea", "slug": "tea-one",
                                           "targets": {"taobao": {"item_id": "600000000001"}}})
    csrf = await signed_in(gw, "merchant@acme.cn")
    resp = await post_form(gw, "/dashboard/channels", {"name": "Li Live"}, csrf)
    page = await resp.text()
    assert resp.status == 422 and errors_of(page) == {"name": "invalid_field"}
    assert 'value="Li Live"' in page
    resp = await post_form(gw, "/dashboard/channels", {"name": "taobao"}, csrf)
    assert errors_of(await resp.text()) == {"name": "reserved_name"}
    resp = await post_form(gw, "/dashboard/channels", {"name": "li_live", "label": "李老师直播间"},
                           csrf)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/channels/li_live"
    page = await (await gw.get("/dashboard/channels/li_live")).text()
    link = f"/p/{made['code']}?ch=li_live"
    assert link in page and "<svg" in page
    assert f"/dashboard/products/{made['id']}/qr.png?ch=li_live" in page
    for _ in range(3):
        gw.session.cookie_jar.clear()
        await gw.get(link, headers={"User-Agent": TAOBAO_UA}, allow_redirects=False)
    assert gw.app is not None
    await gw.app[RECORDER].flush()
    await signed_in(gw, "marketing@acme.cn")
    page = await (await gw.get("/dashboard/channels")).text()
    row = re.search(r'<tr data-key="li_live">(.*?)</tr>', page, re.S)
    assert row and re.search(r'data-metric="clicks">3<', row.group(1)) and "李老师直播间" in row.group(1)
    stats = await (await gw.get("/api/stats?by=channel", headers=acme.auth)).json()
    assert [r["clicks"] for r in stats["rows"] if r["channel"] == "li_live"] == [3]
    assert (await (await gw.get("/api/channels", headers=other.auth)).json())["items"] == []


# --- the WeCom entry point -------------------------------------------------------------------------
async def test_the_entry_point_is_set_its_secrets_never_shown_and_checked(
        gw: Client, shops: tuple[Tenant, Tenant], fake: tuple[FakeWeCom, TestServer]) -> None:
    acme, _ = shops
    wecom, _ = fake
    csrf = await signed_in(gw, "merchant@acme.cn")
    page = await (await gw.get("/dashboard/entry")).text()
    assert "/wecom/callback/acme" in page
    resp = await post_form(gw, "/dashboard/entry", {"kind": "contact_way", "users": ""}, csrf)
    page = await resp.text()
    assert resp.status == 422 and errors_of(page) == {"users": "invalid_field"}
    resp = await post_form(gw, "/dashboard/entry", {
        "kind": "contact_way", "users": "zhangsan\nwangwu", "corp_id": CORP_ID,
        "secret": SECRET, "callback_token": CALLBACK_TOKEN, "encoding_aes_key": AES_KEY}, csrf)
    assert resp.status == 303
    page = await (await gw.get("/dashboard/entry")).text()
    for secret in (SECRET, CALLBACK_TOKEN, AES_KEY):
        assert secret not in page
    assert page.count('data-set="') == 4
    stored = await (await gw.get("/api/entry", headers=acme.auth)).json()
    assert stored["users"] == ["zhangsan", "wangwu"] and stored["secret_set"]
    # Saving again without the secrets keeps them; "清除" clears one.
    resp = await post_form(gw, "/dashboard/entry", {"kind": "contact_way",
                                                    "users": "zhangsan、wangwu"}, csrf)
    assert resp.status == 303
    assert (await (await gw.get("/api/entry", headers=acme.auth)).json())["secret_set"]
    resp = await post_form(gw, "/dashboard/entry", {"kind": "contact_way", "users": "zhangsan",
                                                    "clear_secret": "1"}, csrf)
    assert errors_of(await resp.text()) == {"secret": "missing_field"}
    # The check calls WeCom and shows what came back.
    resp = await post_form(gw, "/dashboard/entry/check", {}, csrf)
    page = await resp.text()
    assert resp.status == 200 and "get_follow_user_list" in wecom.calls
    steps = dict(re.findall(r'data-step="([a-z_:]+)" data-ok="(true|false)"', page))
    assert steps == {"callback": "true", "gettoken": "true", "follow_users": "false"}
    assert "wangwu" in page and SECRET not in page and wecom.current_token not in page


async def test_more_groups_than_wecom_takes_are_refused_with_its_limit(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    # WeCom's "join group" QR takes at most 5 groups: a sixth would be accepted here and
    # refused by WeCom at the first shopper's tap. The merchant is told, and nothing changes.
    acme, _ = shops
    csrf = await signed_in(gw, "merchant@acme.cn")
    groups = "\n".join(f"wrOgQhDgAAMYQiS5ol9G7gK9JV{n:04d}" for n in range(6))
    resp = await post_form(gw, "/dashboard/entry", {"kind": "group", "chat_ids": groups}, csrf)
    page = await resp.text()
    assert resp.status == 422 and errors_of(page) == {"chat_ids": "invalid_field"}
    assert "最多用 5 个" in page
    assert (await gw.get("/api/entry", headers=acme.auth)).status == 404


# --- bulk import -----------------------------------------------------------------------------------
def _workbook(rows: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["title", "targets.jd.sku", "targets.web.url"])
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def _upload(gw: Client, csrf: str, sheet: bytes, name: str = "products.xlsx",
                  **extra: str) -> Any:
    form = FormData()
    form.add_field("csrf", csrf)
    for key, value in extra.items():
        form.add_field(key, value, content_type="text/plain")  # multipart, as the browser
    if sheet:
        form.add_field("file", sheet, filename=name, content_type="application/octet-stream")
    return await gw.post("/dashboard/import", data=form, allow_redirects=False)


async def test_the_console_gives_signed_in_staff_the_import_template(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    # The template the import page links to: every column of every platform, with the
    # sheet that explains them; the same file the API gives. Signed-in staff only.
    resp = await gw.get("/dashboard/import/template.xlsx", allow_redirects=False)
    assert resp.status in (302, 303, 401)
    for role in ("merchant", "marketing"):
        await signed_in(gw, f"{role}@acme.cn")
        resp = await gw.get("/dashboard/import/template.xlsx")
        assert resp.status == 200
        assert "linkloop-products-template" in resp.headers["Content-Disposition"]
        book = openpyxl.load_workbook(io.BytesIO(await resp.read()))
        columns = [c.value for c in book.worksheets[0][1]]
        assert columns == [*BASE_COLUMNS, *target_columns()]
        assert book.worksheets[1].title == "说明"
        assert book.worksheets[1].max_row == len(columns) + 1
        text = (await (await gw.get("/dashboard/import/template.csv")).read()).decode(
            "utf-8-sig")
        assert text.splitlines()[0].split(",") == [*BASE_COLUMNS, *target_columns()]


async def test_the_console_import_shows_the_dry_run_before_writing(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    acme, _ = shops
    csrf = await signed_in(gw, "merchant@acme.cn")
    rows = [[f"茶 {i}", f"1000{i:04d}", f"https://shop.example.com/{i}"] for i in range(20)]
    rows[4][1] = "12a"
    rows[9][2] = "https://evil.example.net/9"
    resp = await _upload(gw, csrf, _workbook(rows))
    page = await resp.text()
    assert resp.status == 422
    bad = re.findall(r'<tr data-row="(\d+)" data-status="error"', page)
    assert bad == ["6", "11"]
    assert errors_of(page) == {"targets.jd.sku": "invalid_field",
                               "targets.web.url": "host_not_allowed"}
    assert 'id="confirm"' not in page
    assert (await (await gw.get("/api/products", headers=acme.auth)).json())["items"] == []
    rows[4][1], rows[9][2] = "10000004", "https://shop.example.com/9"
    resp = await _upload(gw, csrf, _workbook(rows))
    page = await resp.text()
    assert resp.status == 200 and "确认导入 20 个商品" in page
    assert (await (await gw.get("/api/products", headers=acme.auth)).json())["items"] == []
    kept = re.search(r'name="data" value="([^"]+)"', page)
    assert kept
    resp = await _upload(gw, csrf, b"", confirm="1", data=unescape(kept.group(1)),
                         file_name="products.xlsx")
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/import?imported=20"
    listed = await (await gw.get("/api/products?limit=100", headers=acme.auth)).json()
    assert sorted(p["title"] for p in listed["items"]) == sorted(f"茶 {i}" for i in range(20))
    # A file that is no table, and a token that is not the session's.
    resp = await _upload(gw, csrf, b"\x89PNG not a sheet", name="photo.png")
    assert resp.status == 415 and "CSV 或 XLSX" in await resp.text()
    assert (await _upload(gw, "x" * 43, _workbook(rows))).status == 403


# --- forms that cannot be read ---------------------------------------------------------------
def _multipart(*parts: bytes, end: bytes = b"--zz--\r\n") -> bytes:
    return b"".join(b"--zz\r\n" + part + b"\r\n" for part in parts) + end


def _unreadable_forms(csrf: str) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of forms aiohttp's parser raises on, each carrying the right
    CSRF token: bytes not in the charset, a charset Python does not know, multipart bodies
    cut short or without their boundary, a part in an encoding aiohttp does not know."""
    token = csrf.encode()
    field = b'Content-Disposition: form-data; name="csrf"\r\n'
    multipart = "multipart/form-data; boundary=zz"
    return [
        ("application/x-www-form-urlencoded", b"csrf=" + token + b"&title=\xff\xfe"),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"csrf=" + token),
        (multipart, _multipart(field + b"\r\n" + token, end=b"")),  # cut short
        ("multipart/form-data", _multipart(field + b"\r\n" + token)),  # no boundary
        (multipart, _multipart(field + b"\r\n" + token,
                               b'Content-Disposition: form-data; name="title"\r\n\r\n\xff\xfe')),
        (multipart, _multipart(field + b"Content-Transfer-Encoding: rot13\r\n\r\n" + token)),
    ]


async def test_a_form_that_cannot_be_read_is_a_400_page_and_changes_nothing(
        gw: Client, shops: tuple[Tenant, Tenant]) -> None:
    """Found by the hostile sweep: request.post() raised UnicodeDecodeError, LookupError,
    ValueError or RuntimeError on these bodies, and every console form and the login
    answered 500 with a traceback in the log."""
    acme, other = shops
    made = await create_product(gw, acme)
    theirs = await create_product(gw, other, {"title": "对手的茶", "targets": {"jd": {"sku": "100000000002"}}})
    assert gw.app is not None
    store = gw.app[STORE]

    async def stored() -> list[Any]:
        return [(await store.list_products(t.id, limit=100, after_id=0),
                 await store.list_channels(t.id), await store.get_entry(t.id)) for t in shops]

    before = await stored()
    csrf = await signed_in(gw, "merchant@acme.cn")
    paths = ["/dashboard/products/new", f"/dashboard/products/{made['id']}/edit",
             f"/dashboard/products/{made['id']}/retire",
             f"/dashboard/products/{made['id']}/restore", "/dashboard/channels",
             "/dashboard/channels/spring/delete", "/dashboard/entry", "/dashboard/entry/check",
             "/dashboard/import", "/dashboard/logout", "/dashboard/login"]
    wrong = []
    for path in paths:
        for content_type, body in _unreadable_forms(csrf):
            resp = await gw.post(path, data=body, allow_redirects=False,
                                 headers={"Content-Type": content_type})
            # The import reads its parts as raw bytes: a part it need not decode is no
            # error there, and the form is refused for what it lacks (a 403 or 422 page).
            expected = range(400, 500) if path == "/dashboard/import" else (400,)
            if resp.status not in expected or resp.content_type != "text/html":
                wrong.append((path, content_type, body[-30:], resp.status))
    assert not wrong, "\n".join(map(str, wrong))
    # The import reads each part's bytes itself, of any multipart/ body: a part longer than
    # its own Content-Length (counted outside form-data) raises there, as the CSRF is read.
    token = csrf.encode()
    longer = _multipart(b'Content-Disposition: form-data; name="csrf"\r\n'
                        b"Content-Length: %d\r\n\r\n" % (len(token) - 1) + token)
    resp = await gw.post("/dashboard/import", data=longer, allow_redirects=False,
                         headers={"Content-Type": "multipart/mixed; boundary=zz"})
    assert (resp.status, resp.content_type) == (400, "text/html"), resp.status
    assert await stored() == before
    assert (await gw.get("/dashboard/products", allow_redirects=False)).status == 200  # signed in
    page = await gw.get(f"/dashboard/products/{theirs['id']}", allow_redirects=False)
    assert page.status == 404  # the other shop's product is still theirs, not ours
