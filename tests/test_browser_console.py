"""The merchant console in a real browser, walked as a merchant would: headless Chromium
against the gateway running as its own process (and a fake WeCom served from a thread over
loopback). Sign in, create a product with Taobao, JD and WeChat mini-program targets, meet
the inline errors of a bad JD sku and an off-domain web URL, fix them, copy the link, open
the per-app preview, retire and restore, import a 20-row XLSX with 2 bad rows; set up a
channel and the WeCom entry point. A marketing login sees the same pages and changes
nothing. Every page is looked at 390 px wide (a phone) and 1280 px (a desktop); screenshots
are kept under ``test-artifacts/browser/console-*.png``."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openpyxl
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import DESKTOP_UA
from .fake_wecom import CORP_ID, SECRET, FakeWeCom
from .test_browser import (  # noqa: F401 -- fixtures
    ARTIFACTS,
    Browser,
    Live,
    browser,
    chromium,
    decode_qr,
    gateway_process,
    go,
    next_page,
    resources,
    screenshot,
    zbar,
)
from .test_cli import run
from .thread_server import serve_in_thread

PASSWORD = "correct horse battery"
TAOBAO_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "Mobile/15E148 AliApp(TB/10.30.0)")
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
WIDTHS = pytest.mark.parametrize("width", [390, 1280])


@dataclass
class Shop:
    live: Live
    fake: FakeWeCom
    home: Path


@pytest.fixture(scope="module")
def wecom_api() -> Iterator[tuple[FakeWeCom, str]]:
    """The fake WeCom API in a thread: the gateway process calls it when the merchant
    presses 检查."""
    fake = FakeWeCom()
    with serve_in_thread(fake.app()) as base:
        yield fake, f"{base}/cgi-bin"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, chromium: None,  # noqa: F811
         wecom_api: tuple[FakeWeCom, str]) -> Iterator[Shop]:
    """A merchant with a merchant login and a marketing login, set up with ``linkloop``."""
    home = tmp_path_factory.mktemp("console-browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env.update(LINKLOOP_STORAGE_DATA_DIR=str(home / "data"), PYTHONUNBUFFERED="1",
               LINKLOOP_RECORDER_FLUSH_INTERVAL_MS="50",
               LINKLOOP_WECOM_API_BASE=wecom_api[1])
    for command, stdin in [
        (["merchant", "create", "acme", "--name", "Acme 茶庄", "--domain", "shop.acme.cn"],
         None),
        (["user", "create", "boss@acme.cn", "--merchant", "acme", "--role", "merchant"],
         PASSWORD + "\n"),
        (["user", "create", "anna@acme.cn", "--merchant", "acme", "--role", "marketing"],
         PASSWORD + "\n"),
    ]:
        done = run(env, *command, stdin=stdin)
        assert done.returncode == 0, done.stderr
    token = run(env, "token", "--merchant", "acme", "--role", "merchant").stdout.strip()
    log = home / "gateway.log"
    with gateway_process(env, log) as base:
        yield Shop(Live(base, env, token, token, {}, log), wecom_api[0], home)


def sign_in(driver: WebDriver, live: Live, email: str, path: str = "/dashboard/products") -> None:
    driver.get(f"{live.base}{path}")
    assert urlsplit(driver.current_url).path == "/dashboard/login"
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    go(driver, driver.find_element(By.ID, "submit"))
    assert urlsplit(driver.current_url).path == path


def fits(driver: WebDriver) -> None:
    """Nothing runs off the side: the page is no wider than the window (wide tables scroll
    inside their own box), and nothing was fetched from anywhere but the gateway."""
    # clientWidth: the layout viewport (390 on the phone), which a phone's browser keeps
    # even when it zooms out to show a page that runs wider (innerWidth grows then).
    width, viewport = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= viewport, (driver.current_url, width, viewport)
    base = f"{urlsplit(driver.current_url).scheme}://{urlsplit(driver.current_url).netloc}/"
    assert all(url.startswith(base) for url in resources(driver)), resources(driver)


def shot(driver: WebDriver, name: str) -> Path:
    """The whole page as a screenshot (beyond the window, without resizing it: a resize
    lays a phone's page out anew under the test's feet)."""
    import base64

    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 8000), "scale": 1}})
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data["data"]))
    assert path.stat().st_size > 1000
    return path


def errors(driver: WebDriver) -> dict[str, str]:
    return {str(e.get_attribute("data-field")): str(e.get_attribute("data-code"))
            for e in driver.find_elements(By.CSS_SELECTOR, ".field-error[data-field]")}


def fill(driver: WebDriver, values: dict[str, str]) -> None:
    """Type into the fields the API's JSON paths name (opening a platform's section)."""
    for name, value in values.items():
        field = driver.find_element(By.NAME, name)
        if not field.is_displayed():
            section = field.find_element(By.XPATH, "ancestor::details")
            driver.execute_script("arguments[0].open = true", section)
        field.clear()
        if value:
            field.send_keys(value)


def products(live: Live) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = live.api("GET", "/api/products?limit=100")["items"]
    return items


def _workbook(rows: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["title", "price", "targets.taobao.item_id", "targets.jd.sku",
                  "targets.web.url"])
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- the merchant's walk -------------------------------------------------------------------------
@WIDTHS
def test_a_merchant_makes_shares_previews_retires_and_restores_a_product(
        shop: Shop, browser: Browser, width: int) -> None:  # noqa: F811
    live = shop.live
    phone = width < 1000
    driver = browser(PHONE_UA if phone else DESKTOP_UA, phone=phone)
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": live.base})
    sign_in(driver, live, "boss@acme.cn")
    fits(driver)
    shot(driver, f"console-products-{width}")
    go(driver, driver.find_element(By.ID, "new-product"))
    assert urlsplit(driver.current_url).path == "/dashboard/products/new"
    fits(driver)
    title = f"明前龙井 250g（{width}）"
    typed = {"title": title, "price": "168",
             "targets.taobao.item_id": "600000000001",
             "targets.taobao.share_token": "￥AbC123￥",
             "targets.jd.sku": "12a",
             "targets.wechat_miniprogram.appid": "wx0123456789abcdef",
             "targets.wechat_miniprogram.path": "pages/item/index",
             "targets.web.url": "https://evil.example.net/tea"}
    fill(driver, typed)
    go(driver, driver.find_element(By.ID, "save"))
    # Inline, in Chinese, next to their fields; what was typed is still there.
    assert errors(driver) == {"targets.jd.sku": "invalid_field",
                              "targets.web.url": "host_not_allowed"}
    sku_error = driver.find_element(By.ID, "f-targets-jd-sku-error")
    assert sku_error.text.startswith("格式不对：京东商品链接") and sku_error.is_displayed()
    sku = driver.find_element(By.ID, "f-targets-jd-sku")
    assert sku.get_attribute("aria-invalid") == "true"
    assert abs(sku_error.location["y"] - sku.location["y"]) < 120  # right under its field
    assert "网址必须在你店铺的域名上（shop.acme.cn）" in driver.find_element(
        By.ID, "f-targets-web-url-error").text
    for name, value in typed.items():
        assert driver.find_element(By.NAME, name).get_attribute("value") == value
    assert "有 2 处需要修改" in driver.find_element(By.ID, "form-errors").text
    fits(driver)
    driver.execute_script("window.scrollTo(0, 0)")
    shot(driver, f"console-new-errors-{width}")
    assert not any(p["title"] == title for p in products(live))  # nothing written yet

    fill(driver, {"targets.jd.sku": "100012043978",
                  "targets.web.url": "https://shop.acme.cn/tea"})
    go(driver, driver.find_element(By.ID, "save"))
    made = next(p for p in products(live) if p["title"] == title)
    assert urlsplit(driver.current_url).path == f"/dashboard/products/{made['id']}"
    assert set(made["targets"]) == {"taobao", "jd", "wechat_miniprogram", "web"}
    assert driver.find_element(By.ID, "product-state").get_attribute("data-state") == "live"
    fits(driver)
    shot(driver, f"console-product-{width}")

    # Copy the link: the clipboard holds the share link.
    copy = driver.find_element(By.ID, "copy-link")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", copy)
    copy.click()
    WebDriverWait(driver, 5).until(lambda d: copy.text == "已复制")
    pasted = driver.execute_async_script(
        "var done = arguments[0]; navigator.clipboard.readText().then(done, "
        "function (e) { done('error: ' + e); });")
    assert pasted == made["share_url"]

    # What each app will show, without a phone.
    preview = driver.find_element(By.ID, "preview")
    assert preview.get_attribute("open") is None
    summary = preview.find_element(By.TAG_NAME, "summary")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", summary)
    summary.click()
    WebDriverWait(driver, 5).until(lambda d: preview.get_attribute("open") is not None)
    rows = {str(r.get_attribute("data-place")): str(r.get_attribute("data-outcome"))
            for r in preview.find_elements(By.CSS_SELECTOR, "li[data-place]")}
    answer = live.api("GET", f"/api/products/{made['id']}/preview")
    assert rows == {p["place"]: p["outcome"] for p in answer["places"]}
    assert len(rows) == 20 and rows["taobao"] == "redirect" and rows["jd"] == "redirect"
    taobao_row = preview.find_element(By.CSS_SELECTOR, 'li[data-place="taobao"]')
    assert "taobao://" in taobao_row.text or "item.taobao.com" in taobao_row.text
    fits(driver)
    screenshot(driver, f"console-preview-{width}")

    # Retire (after a confirm), then restore: the same code answers again.
    driver.execute_script("window.scrollTo(0, 0)")
    retire = driver.find_element(By.ID, "retire")
    retire.click()
    WebDriverWait(driver, 5).until(lambda d: d.switch_to.alert)
    alert = driver.switch_to.alert
    assert "已经发出去的链接和二维码会显示「商品已下架」" in alert.text
    alert.accept()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(
        By.ID, "product-state").get_attribute("data-state") == "retired")
    status, _, _ = live.request("GET", f"/p/{made['code']}", headers={"User-Agent": TAOBAO_UA})
    assert status == 410
    screenshot(driver, f"console-retired-{width}")
    go(driver, driver.find_element(By.ID, "restore"))
    assert driver.find_element(By.ID, "product-state").get_attribute("data-state") == "live"
    status, headers, _ = live.request("GET", f"/p/{made['code']}",
                                      headers={"User-Agent": TAOBAO_UA})
    assert status == 302 and "600000000001" in headers["Location"]
    assert live.api("GET", f"/api/products/{made['id']}")["code"] == made["code"]

    # Found again by searching the list, with its state.
    driver.get(f"{live.base}/dashboard/products")
    driver.find_element(By.ID, "q").send_keys(str(width))
    go(driver, driver.find_element(By.ID, "search-go"))
    titles = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#product-table td.name > a")]
    assert titles == [title]
    fits(driver)


@WIDTHS
def test_a_merchant_imports_a_spreadsheet_after_its_dry_run(
        shop: Shop, browser: Browser, width: int, tmp_path: Path) -> None:  # noqa: F811
    live = shop.live
    driver = browser(PHONE_UA if width < 1000 else DESKTOP_UA, phone=width < 1000)
    sign_in(driver, live, "boss@acme.cn", "/dashboard/import")
    fits(driver)
    shot(driver, f"console-import-{width}")
    rows = [[f"茶 {width}-{i}", "9.90", f"6000{width}{i:04d}", f"10{width}{i:04d}",
             f"https://shop.acme.cn/t/{i}"] for i in range(20)]
    rows[4][3] = "12a"
    rows[9][4] = "https://evil.example.net/9"
    bad = tmp_path / "products.xlsx"
    bad.write_bytes(_workbook(rows))
    before = len(products(live))
    driver.find_element(By.ID, "file").send_keys(str(bad))
    go(driver, driver.find_element(By.ID, "check-file"))
    named = [r.get_attribute("data-row") for r in driver.find_elements(
        By.CSS_SELECTOR, '#dry-run-rows tr[data-status="error"]')]
    assert named == ["6", "11"]
    assert "20 行中，2 行需要修改" in driver.find_element(By.ID, "dry-run-summary").text
    problems = driver.find_element(By.CSS_SELECTOR, 'tr[data-row="6"]').text
    assert "京东 商品 SKU：格式不对" in problems
    assert driver.find_elements(By.ID, "confirm-import") == []
    assert len(products(live)) == before  # nothing written
    fits(driver)
    shot(driver, f"console-import-dry-run-{width}")

    rows[4][3], rows[9][4] = f"10{width}0004", "https://shop.acme.cn/t/9"
    good = tmp_path / "fixed.xlsx"
    good.write_bytes(_workbook(rows))
    driver.find_element(By.ID, "file").send_keys(str(good))
    go(driver, driver.find_element(By.ID, "check-file"))
    confirm = driver.find_element(By.ID, "confirm-import")
    assert confirm.text == "确认导入 20 个商品"
    assert len(products(live)) == before  # the dry run again wrote nothing
    go(driver, confirm)
    assert "已导入 20 个商品" in driver.find_element(By.ID, "imported").text
    imported = [p for p in products(live) if p["title"].startswith(f"茶 {width}-")]
    assert len(imported) == 20 and all(p["state"] == "live" for p in imported)
    screenshot(driver, f"console-imported-{width}")


@WIDTHS
def test_a_merchant_names_a_channel_and_sets_up_wecom(
        shop: Shop, browser: Browser, zbar: str, width: int) -> None:  # noqa: F811
    live = shop.live
    made = live.api("POST", "/api/products", {
        "title": f"手作陶瓷杯 {width}", "targets": {"taobao": {"item_id": "600000000009"}}})
    driver = browser(PHONE_UA if width < 1000 else DESKTOP_UA, phone=width < 1000)
    sign_in(driver, live, "boss@acme.cn", "/dashboard/channels")
    name = f"live_{width}"
    driver.find_element(By.ID, "channel-name").send_keys("Li Live")
    go(driver, driver.find_element(By.ID, "create-channel"))
    assert errors(driver) == {"name": "invalid_field"}
    assert "小写字母" in driver.find_element(By.ID, "channel-error").text
    field = driver.find_element(By.ID, "channel-name")
    field.clear()
    field.send_keys(name)
    driver.find_element(By.ID, "channel-label").send_keys("李老师直播间")
    go(driver, driver.find_element(By.ID, "create-channel"))
    assert urlsplit(driver.current_url).path == f"/dashboard/channels/{name}"
    for option in driver.find_elements(By.CSS_SELECTOR, "#qr-product option"):
        if option.text == made["title"]:
            option.click()
    go(driver, driver.find_element(By.CSS_SELECTOR, "#channel-qr button[type=submit]"))
    link = f"{made['share_url']}?ch={name}"
    assert driver.find_element(By.ID, "channel-link").text == link
    qr = driver.find_element(By.CSS_SELECTOR, "#channel-qr svg")
    assert decode_qr(zbar, qr.screenshot_as_png) == [link]
    fits(driver)
    shot(driver, f"console-channel-{width}")
    for _ in range(2):
        live.request("GET", urlsplit(link).path + "?" + urlsplit(link).query,
                     headers={"User-Agent": TAOBAO_UA})
    deadline = time.monotonic() + 30
    while True:
        driver.get(f"{live.base}/dashboard/channels")
        cell = driver.find_element(By.CSS_SELECTOR,
                                   f'#channel-table tr[data-key="{name}"] [data-metric=clicks]')
        if cell.text == "2" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cell.text == "2"
    fits(driver)
    shot(driver, f"console-channels-{width}")

    # The WeCom entry point: the callback URL to paste, secrets written once, a check.
    driver.get(f"{live.base}/dashboard/entry")
    assert driver.find_element(By.ID, "callback-url").text == (
        f"{live.base}/wecom/callback/acme")
    # Six groups: WeCom's join-group QR takes five. Said next to the field, nothing saved.
    driver.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="group"]').click()
    driver.find_element(By.ID, "entry-chats").send_keys(
        "\n".join(f"wrOgQhDgAAMYQiS5ol9G7gK9JV{n:04d}" for n in range(6)))
    go(driver, driver.find_element(By.ID, "save-entry"))
    problem = driver.find_element(By.CSS_SELECTOR, '.field-error[data-field="chat_ids"]')
    assert problem.is_displayed() and "最多用 5 个" in problem.text
    fits(driver)
    shot(driver, f"console-entry-groups-{width}")
    driver.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="contact_way"]').click()
    assert driver.find_element(By.ID, "entry-users").is_displayed()
    assert not driver.find_element(By.ID, "entry-url").is_displayed()
    users = driver.find_element(By.ID, "entry-users")
    users.clear()
    users.send_keys("zhangsan\nwangwu")
    driver.find_element(By.ID, "entry-corp_id").send_keys(CORP_ID)
    driver.find_element(By.ID, "entry-secret").send_keys(SECRET)
    go(driver, driver.find_element(By.ID, "save-entry"))
    assert driver.find_element(By.ID, "saved").is_displayed()
    assert SECRET not in driver.page_source
    go(driver, driver.find_element(By.ID, "check-entry"))
    steps = {str(s.get_attribute("data-step")): str(s.get_attribute("data-ok"))
             for s in driver.find_elements(By.CSS_SELECTOR, "#check-steps li")}
    assert steps == {"callback": "false", "gettoken": "true", "follow_users": "false"}
    assert "wangwu" in driver.find_element(By.ID, "check-steps").text
    assert "get_follow_user_list" in shop.fake.calls
    fits(driver)
    shot(driver, f"console-entry-{width}")


# --- a marketing login --------------------------------------------------------------------------
@WIDTHS
def test_a_marketing_login_sees_the_console_and_changes_nothing(
        shop: Shop, browser: Browser, width: int) -> None:  # noqa: F811
    live = shop.live
    made = live.api("POST", "/api/products", {
        "title": f"只读商品 {width}", "targets": {"jd": {"sku": "100012043978"}}})
    before = live.api("GET", f"/api/products/{made['id']}")
    driver = browser(PHONE_UA if width < 1000 else DESKTOP_UA, phone=width < 1000)
    sign_in(driver, live, "anna@acme.cn")
    assert driver.find_elements(By.ID, "new-product") == []
    for path in (f"/dashboard/products/{made['id']}", "/dashboard/channels",
                 "/dashboard/entry", "/dashboard/import"):
        driver.get(f"{live.base}{path}")
        assert driver.find_element(By.TAG_NAME, "h1").text, path
        forms = [f.get_attribute("action") for f in driver.find_elements(
            By.CSS_SELECTOR, "form[method=post]")]
        assert forms == [f"{live.base}/dashboard/logout"], (path, forms)
        fits(driver)
    driver.get(f"{live.base}/dashboard/products/{made['id']}")
    assert driver.find_elements(By.ID, "retire") == []
    shot(driver, f"console-marketing-product-{width}")
    # A write forged from her own signed-in page (the page's CSP lets no script fetch: a
    # form made and posted in it) is refused, whatever it carries.
    csrf = driver.find_element(By.CSS_SELECTOR, 'form[action="/dashboard/logout"] '
                                                'input[name=csrf]').get_attribute("value")
    for path, fields in [(f"/dashboard/products/{made['id']}/retire", {}),
                         (f"/dashboard/products/{made['id']}/edit",
                          {"title": "stolen", "targets.jd.sku": "100012043978"}),
                         ("/dashboard/channels", {"name": "spy"}),
                         ("/dashboard/entry", {"kind": "static",
                                               "qr_url": "https://evil.example.net/q.png"})]:
        driver.get(f"{live.base}/dashboard/products/{made['id']}")
        next_page(driver, lambda path=path, fields=fields: driver.execute_script(
            "var f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
            "var all = arguments[1];"
            "Object.keys(all).forEach(function (k) { var i = document.createElement('input');"
            "  i.type = 'hidden'; i.name = k; i.value = all[k]; f.appendChild(i); });"
            "document.body.appendChild(f); f.submit();", path, {"csrf": csrf, **fields}))
        assert "没有修改权限" in driver.find_element(By.ID, "error").text, path
    driver.get(f"{live.base}/dashboard/products/new")
    assert "没有修改权限" in driver.find_element(By.TAG_NAME, "main").text
    screenshot(driver, f"console-marketing-forbidden-{width}")
    assert live.api("GET", f"/api/products/{made['id']}") == before
    channels = [c["name"] for c in live.api("GET", "/api/channels")["items"]]
    assert "spy" not in channels
    status, _, body = live.request("GET", "/api/entry",
                                   headers={"Authorization": f"Bearer {live.token}"})
    assert status == 404 or json.loads(body)["kind"] != "static"
