"""Real pages in a real browser: Debian's headless Chromium, driven by Selenium through
chromium-driver, against the real gateway running as its own process.

The landing page under a WeChat, a Douyin and a desktop User-Agent (what shows, where each
button goes, the open-in-browser overlay, the copy button), the dashboard's login, filters
and CSV download, and QR codes read back with a real decoder (zbar). Screenshots are kept
under ``test-artifacts/browser/``.

Chromium, chromedriver and zbarimg come from the system (Debian: ``chromium``,
``chromium-driver``, ``zbar-tools``; ``fonts-noto-cjk`` for readable screenshots). The suite
installs nothing: where one is missing these tests skip and say which, unless
``LINKLOOP_TEST_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets, after installing them) turns the
skip into a failure.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import DESKTOP_UA, LINKLOOP, REPO
from .test_cli import free_port, run
from .test_dashboard import shown
from .wait import until_sync

REQUIRE_VAR = "LINKLOOP_TEST_REQUIRE_BROWSER"
ARTIFACTS = REPO / "test-artifacts" / "browser"

WECHAT_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) "
              "NetType/WIFI Language/zh_CN")
DOUYIN_ANDROID = ("Mozilla/5.0 (Linux; Android 14; V2244A; wv) AppleWebKit/537.36 (KHTML, "
                  "like Gecko) Version/4.0 Chrome/120.0.6099.193 Mobile Safari/537.36 "
                  "aweme_300100 JsSdk/1.0 NetType/WIFI AppName/aweme app_version/30.1.0 "
                  "ByteLocale/zh-CN")
TAOBAO_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "Mobile/15E148 AliApp(TB/10.30.0)")
PASSWORD = "correct horse battery"
ACQUISITION = "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"
SHARE_TOKEN = "￥AbC123￥"


# --- system tools ---------------------------------------------------------------------------

def go(driver: WebDriver, element: Any, timeout: float = 15) -> None:
    """Click ``element`` and wait for the next page to have loaded, as a person would."""
    next_page(driver, element.click, timeout)


def next_page(driver: WebDriver, action: Callable[[], object], timeout: float = 15) -> None:
    """Do ``action`` and wait for the next page to have loaded: the old document is marked,
    and the wait is over when a document without the mark has finished loading.

    Selenium's click returns once the event is dispatched, before the next page loads.
    Asking the old element whether it went stale can meet the page half-replaced, and
    ChromeDriver then answers neither "stale" nor "fresh" but an error ("Node with given id
    does not belong to the document"), which failed CI once."""
    driver.execute_script("window.__before_click = true")
    action()

    def loaded(d: WebDriver) -> bool:
        try:
            return bool(d.execute_script(
                "return window.__before_click === undefined && document.readyState === 'complete'"))
        except WebDriverException:  # between the two documents
            return False

    WebDriverWait(driver, timeout).until(loaded)


def system_tool(names: tuple[str, ...], package: str) -> str:
    """The path of the first of ``names`` on PATH; else skip, or fail when it is required."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    reason = (f"needs {names[0]} on PATH (Debian package {package}); the test suite installs "
              f"nothing: `.ci/run` installs it, or `sudo apt-get install -y {package}`")
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{reason}; {REQUIRE_VAR}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Chromium:
    binary: str
    driver: str


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    return Chromium(system_tool(("chromium", "chromium-browser"), "chromium"),
                    system_tool(("chromedriver",), "chromium-driver"))


@pytest.fixture(scope="session")
def zbar() -> str:
    return system_tool(("zbarimg",), "zbar-tools")


def decode_qr(zbarimg: str, png: bytes) -> list[str]:
    """What zbar reads in an image: one string per code found."""
    with tempfile.NamedTemporaryFile(suffix=".png") as image:
        image.write(png)
        image.flush()
        done = subprocess.run([zbarimg, "--quiet", "--raw", image.name],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 4), done.stderr  # 4: nothing found
    return done.stdout.splitlines()


def fonts_without_cjk(folder: Path) -> Path:
    """A fontconfig file with the system's fonts minus every one that has Chinese glyphs, as
    on a machine without CJK fonts: the page's Chinese text then falls back to boxes."""
    config = folder / "fonts-without-cjk.conf"
    config.write_text(f"""<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <cachedir>{folder / "fontconfig-cache"}</cachedir>
  <selectfont><rejectfont><pattern>
    <patelt name="charset"><charset><int>0x4e2d</int></charset></patelt>
  </pattern></rejectfont></selectfont>
</fontconfig>
""", encoding="utf-8")
    return config


# --- the gateway, as its own process ----------------------------------------------------------
@dataclass
class Live:
    base: str
    env: dict[str, str]
    token: str
    marketing_token: str
    product: dict[str, Any]
    log: Path

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request, redirects not followed."""
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def api(self, method: str, path: str, body: Any = None, *, marketing: bool = False) -> Any:
        token = self.marketing_token if marketing else self.token
        status, _, raw = self.request(method, path, body,
                                      {"Authorization": f"Bearer {token}"})
        assert 200 <= status < 300, (status, raw)
        return json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()

    def settled_stats(self, query: str, clicks: int) -> Any:
        """Stats once the recorder has written the ``clicks`` clicks the test made."""
        def counted() -> Any:
            now = self.api("GET", f"/api/stats?{query}", marketing=True)
            return now if sum(r["clicks"] for r in now["rows"]) == clicks else None

        return until_sync(counted, what=f"{clicks} clicks in the stats for {query}")


@contextmanager
def gateway_process(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([*LINKLOOP, "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A merchant, a marketing login, a product and a WeCom entry, set up as a merchant
    would: with ``linkloop`` commands and the HTTP API."""
    home = tmp_path_factory.mktemp("browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env.update(LINKLOOP_STORAGE_DATA_DIR=str(home / "data"), PYTHONUNBUFFERED="1",
               LINKLOOP_RECORDER_FLUSH_INTERVAL_MS="50")
    for command, stdin in [
        (["merchant", "create", "acme", "--name", "Acme 茶庄", "--domain", "shop.acme.cn"],
         None),
        (["user", "create", "anna@acme.cn", "--merchant", "acme", "--role", "marketing"],
         PASSWORD + "\n"),
    ]:
        done = run(env, *command, stdin=stdin)
        assert done.returncode == 0, done.stderr
    tokens = [run(env, "token", "--merchant", "acme", "--role", role).stdout.strip()
              for role in ("merchant", "marketing")]
    log = home / "gateway.log"
    with gateway_process(env, log) as base:
        live = Live(base, env, tokens[0], tokens[1], {}, log)
        # No product image: then nothing at all on the landing page comes from elsewhere.
        live.product = live.api("POST", "/api/products", {
            "title": "明前龙井 250g", "price": 168,
            "targets": {"taobao": {"item_id": "600000000001", "share_token": SHARE_TOKEN},
                        "jd": {"sku": "100000000001"},
                        "web": {"url": "https://shop.acme.cn/tea"}}})
        live.api("PUT", "/api/entry", {"kind": "acquisition_link", "url": ACQUISITION})
        yield live


# --- the browser --------------------------------------------------------------------------------
Browser = Callable[..., WebDriver]


@pytest.fixture
def browser(chromium: Chromium, tmp_path: Path) -> Iterator[Browser]:
    """Opens headless Chromium windows: as a phone (``phone=True``) or a desktop; with
    ``fontconfig``, with the fonts that fontconfig file gives."""
    drivers: list[WebDriver] = []

    def open_browser(user_agent: str, *, phone: bool = False, downloads: Path | None = None,
                     fontconfig: Path | None = None) -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium.binary
        profile = tempfile.mkdtemp(dir=tmp_path, prefix="chromium-")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--lang=zh-CN", f"--user-data-dir={profile}",
                     f"--user-agent={user_agent}"):
            options.add_argument(flag)
        if phone:
            options.add_experimental_option("mobileEmulation", {
                "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2,
                                  "touch": True, "mobile": True},
                "userAgent": user_agent})
        else:
            options.add_argument("--window-size=1280,900")
        if downloads is not None:
            options.add_experimental_option("prefs", {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False})
        env = dict(os.environ)
        if fontconfig is not None:
            env["FONTCONFIG_FILE"] = str(fontconfig)
        # The driver is ours: Selenium never looks for (or downloads) one itself.
        driver = webdriver.Chrome(service=Service(chromium.driver, env=env), options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(30)
        if downloads is not None:
            driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
                "behavior": "allow", "downloadPath": str(downloads)})
        return driver

    yield open_browser
    for driver in drivers:
        driver.quit()


def screenshot(driver: WebDriver, name: str, *, full: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full:  # the whole page, not just the window
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 120, 6000))
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def resources(driver: WebDriver) -> list[str]:
    """Every URL the page fetched after its own document (images, styles, scripts...)."""
    found: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    return found


def hrefs(driver: WebDriver, css: str) -> dict[str, str]:
    return {str(e.get_attribute("data-platform")): str(e.get_attribute("href"))
            for e in driver.find_elements(By.CSS_SELECTOR, css)}


# --- the landing page ---------------------------------------------------------------------------
def test_landing_in_wechat(live: Live, browser: Browser) -> None:
    driver = browser(WECHAT_IOS, phone=True)
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": live.base})
    share_url = live.product["share_url"]
    code = live.product["code"]
    driver.get(share_url)
    assert driver.title == "明前龙井 250g"
    assert driver.find_element(By.TAG_NAME, "h1").text == "明前龙井 250g"
    size = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].decodedBodySize")
    assert 0 < int(size) < 50 * 1024
    assert resources(driver) == []  # nothing fetched beyond the page itself

    # The WeCom entry comes first and goes through the tracked hop with this click's id.
    entry = driver.find_element(By.CSS_SELECTOR, "#entry a.btn")
    assert entry.is_displayed() and "添加企业微信" in entry.text
    entry_url = str(entry.get_attribute("href"))
    assert entry_url.startswith(f"{live.base}/e/{code}?c=")
    assert entry.location["y"] < driver.find_element(By.ID, "stores").location["y"]
    # What WeChat opens: JD and the web shop, each through /o/ with the same click id.
    click_id = parse_qs(urlsplit(entry_url).query)["c"][0]
    assert hrefs(driver, "#stores a[data-platform]") == {
        p: f"{live.base}/o/{code}/{p}?c={click_id}" for p in ("jd", "web")}
    status, headers, _ = live.request("GET", f"/o/{code}/jd?c={click_id}",
                                      headers={"User-Agent": WECHAT_IOS})
    assert status == 302
    assert headers["Location"].startswith("https://item.m.jd.com/product/100000000001")
    status, headers, _ = live.request("GET", f"/e/{code}?c={click_id}",
                                      headers={"User-Agent": WECHAT_IOS})
    assert status == 302 and headers["Location"].startswith(ACQUISITION)

    # Taobao is blocked in WeChat: its 口令 to copy, and a button into the guide.
    taobao = driver.find_element(By.CSS_SELECTOR, '.blocked[data-platform="taobao"]')
    assert taobao.find_element(By.CLASS_NAME, "token").text == SHARE_TOKEN
    copy = taobao.find_element(By.CSS_SELECTOR, "button[data-copy]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", copy)
    copy.click()
    WebDriverWait(driver, 5).until(lambda d: "已复制" in copy.text)
    assert copy.text == "口令已复制，打开淘宝 App 即可"
    pasted = driver.execute_async_script(
        "var done = arguments[0]; navigator.clipboard.readText().then(done, "
        "function (e) { done('error: ' + e); });")
    assert pasted == SHARE_TOKEN
    screenshot(driver, "landing-wechat-copied")

    # The overlay: hidden until asked for, then pointing at WeChat's top-right menu.
    driver.execute_script("window.scrollTo(0, 0)")
    overlay = driver.find_element(By.ID, "browser-overlay")
    assert not overlay.is_displayed()
    screenshot(driver, "landing-wechat")
    driver.find_element(By.ID, "open-in-browser").click()
    WebDriverWait(driver, 5).until(lambda d: overlay.is_displayed())
    assert overlay.get_attribute("data-corner") == "top-right"
    assert "点击右上角的" in overlay.text and "在Safari中打开" in overlay.text
    arrow = driver.execute_script(
        "var r = document.querySelector('#browser-overlay .arrow').getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom, innerWidth, innerHeight];")
    left, top, right, bottom, width, height = arrow
    assert left > width / 2 and right <= width and top >= 0 and bottom < height / 4
    screenshot(driver, "landing-wechat-overlay")
    overlay.find_element(By.CSS_SELECTOR, "button[data-close]").click()
    WebDriverWait(driver, 5).until(lambda d: not overlay.is_displayed())
    # A blocked storefront's button opens the same guide.
    ghost = taobao.find_element(By.CSS_SELECTOR, "a[data-show-guide]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", ghost)
    ghost.click()
    WebDriverWait(driver, 5).until(lambda d: overlay.is_displayed())
    assert urlsplit(driver.current_url).path == f"/p/{code}"  # no navigation, no fragment trap


def test_landing_in_douyin(live: Live, browser: Browser) -> None:
    driver = browser(DOUYIN_ANDROID, phone=True)
    driver.get(live.product["share_url"])
    assert driver.find_element(By.TAG_NAME, "h1").text == "明前龙井 250g"
    # Douyin opens none of this product's shops: no store button leaves the page...
    assert hrefs(driver, "#stores a[data-platform]") == {}
    blocked = [e.get_attribute("data-platform")
               for e in driver.find_elements(By.CSS_SELECTOR, ".blocked[data-platform]")]
    assert blocked == ["taobao", "jd", "web"]
    guide = driver.find_element(By.ID, "guide")
    assert "请点击右上角的 ···，选择「在浏览器打开」" in guide.text
    assert resources(driver) == []
    screenshot(driver, "landing-douyin")
    # ...each one opens the guide, pointing at Douyin's menu with its Android words.
    button = driver.find_element(By.CSS_SELECTOR, '.blocked[data-platform="jd"] a')
    assert button.text == "去京东购买（需在浏览器打开）"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    overlay = driver.find_element(By.ID, "browser-overlay")
    WebDriverWait(driver, 5).until(lambda d: overlay.is_displayed())
    assert overlay.get_attribute("data-corner") == "top-right"
    assert "选择「在浏览器打开」" in overlay.text
    screenshot(driver, "landing-douyin-overlay")
    entry = driver.find_element(By.CSS_SELECTOR, "#entry a.btn")
    assert str(entry.get_attribute("href")).startswith(f"{live.base}/e/{live.product['code']}?c=")


@pytest.mark.parametrize("fonts", ["system fonts", "no CJK fonts"])
def test_landing_on_a_desktop(live: Live, browser: Browser, zbar: str, fonts: str,
                              tmp_path: Path) -> None:
    driver = browser(DESKTOP_UA, fontconfig=None if fonts == "system fonts"
                     else fonts_without_cjk(tmp_path))
    driver.get(live.product["share_url"])
    code = live.product["code"]
    links = hrefs(driver, "#stores a[data-platform]")
    assert set(links) == {"taobao", "jd", "web"}
    assert all(url.startswith(f"{live.base}/o/{code}/") for url in links.values())
    assert driver.find_elements(By.ID, "browser-overlay") == []  # nothing is blocked here
    status, headers, _ = live.request("GET", urlsplit(links["web"]).path + "?"
                                      + urlsplit(links["web"]).query,
                                      headers={"User-Agent": DESKTOP_UA})
    assert status == 302 and headers["Location"] == "https://shop.acme.cn/tea"
    # A desktop shopper mostly scans the code with their phone: it is in the first screen,
    # whole, beside the buttons (with CJK fonts' taller lines too), and reads as the link.
    qr = driver.find_element(By.CSS_SELECTOR, "#qr svg")
    top, bottom, height = driver.execute_script(
        "var r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom, innerHeight];",
        qr)
    assert top >= 0 and bottom <= height, (top, bottom, height)
    assert decode_qr(zbar, qr.screenshot_as_png) == [live.product["share_url"]]
    assert resources(driver) == []
    screenshot(driver, f"landing-desktop-{fonts.replace(' ', '-')}")


def test_qr_codes_decode_to_the_share_link(live: Live, zbar: str) -> None:
    product = live.product
    for query, expected in [("", product["share_url"]),
                            ("?ch=spring_live", f"{product['share_url']}?ch=spring_live")]:
        status, headers, png = live.request(
            "GET", f"/api/products/{product['id']}/qr.png{query}",
            headers={"Authorization": f"Bearer {live.marketing_token}"})
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert decode_qr(zbar, png) == [expected]
    assert product["qr_url"].endswith(f"/api/products/{product['id']}/qr.svg")


# --- the dashboard ----------------------------------------------------------------------------
def _shop(live: Live, code: str) -> None:
    """Shoppers arrive from several apps, some through a tagged link."""
    for ua, query, times in [(TAOBAO_UA, "?ch=live", 3), (WECHAT_IOS, "", 2),
                             (WECHAT_IOS, "?ch=live", 1), (DOUYIN_ANDROID, "", 2),
                             (DESKTOP_UA, "?ch=poster", 1)]:
        for _ in range(times):
            status, _, _ = live.request("GET", f"/p/{code}{query}", headers={"User-Agent": ua})
            assert status in (200, 302)


def _table(driver: WebDriver, table_id: str) -> dict[str, dict[str, str]]:
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr"):
        rows[str(row.get_attribute("data-key"))] = {
            str(cell.get_attribute("data-metric")): cell.text
            for cell in row.find_elements(By.CSS_SELECTOR, "td[data-metric]")}
    return rows


def _as_shown(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, str]]:
    metrics = ("clicks", "unique_visitors", "bot_clicks", "redirects", "landings", "guides",
               "storefront_opens", "entries", "adds", "chats", "lost_contacts", "open_rate",
               "entry_rate", "add_rate")
    return {str(r[key]): shown(r, metrics) for r in rows}


def _downloaded(folder: Path) -> bool:
    """Chromium's download is finished: it first makes an empty file under the final name,
    writes into ``*.crdownload`` and renames that over it at the end."""
    names = list(folder.iterdir())
    return (any(p.suffix == ".csv" and p.stat().st_size > 0 for p in names)
            and not any(p.suffix == ".crdownload" for p in names))


def test_dashboard_login_filters_and_csv(live: Live, browser: Browser, tmp_path: Path) -> None:
    # A product of its own: the other tests' visits to live.product are not in its figures.
    gift = live.api("POST", "/api/products", {"title": "龙井礼盒", "targets": {
        "taobao": {"item_id": "600000000002"}, "web": {"url": "https://shop.acme.cn/gift"}}})
    _shop(live, gift["code"])
    counted = live.settled_stats(f"by=platform&product={gift['id']}", clicks=9)
    # What _shop did, counted by hand: every tap without a cookie is a new visitor.
    assert {r["platform"]: (r["clicks"], r["unique_visitors"]) for r in counted["rows"]} == {
        "taobao": (3, 3), "wechat": (3, 3), "douyin": (2, 2), "web": (1, 1)}
    everything = live.api("GET", "/api/stats?by=platform", marketing=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(DESKTOP_UA, downloads=downloads)

    # Not logged in: the dashboard sends you to its login form.
    driver.get(f"{live.base}/dashboard")
    assert urlsplit(driver.current_url).path == "/dashboard/login"
    screenshot(driver, "dashboard-login")
    driver.find_element(By.ID, "email").send_keys("anna@acme.cn")
    driver.find_element(By.ID, "password").send_keys("not the password")
    go(driver, driver.find_element(By.ID, "submit"))
    assert "邮箱或密码不正确" in driver.find_element(By.ID, "login-error").text
    screenshot(driver, "dashboard-login-refused")
    assert driver.find_element(By.ID, "email").get_attribute("value") == "anna@acme.cn"
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    go(driver, driver.find_element(By.ID, "submit"))
    assert urlsplit(driver.current_url).path == "/dashboard"
    assert "Acme 茶庄" in driver.find_element(By.CLASS_NAME, "who").text
    session = driver.get_cookie("ll_session")
    assert session is not None and session["httpOnly"] and session["sameSite"] == "Lax"

    # The figures are the API's for the same (default) filters.
    assert _table(driver, "platform-table") == _as_shown(everything["rows"], "platform")
    tiles = {t.get_attribute("data-metric"): t.text
             for t in driver.find_elements(By.CSS_SELECTOR, "#totals [data-metric]")}
    assert tiles["clicks"] == f"{sum(r['clicks'] for r in everything['rows']):,}"
    assert driver.find_element(By.CSS_SELECTOR, "#platform-chart svg").is_displayed()
    screenshot(driver, "dashboard-overview", full=True)

    # Filters: chosen in the form, kept in the URL, and the figures follow.
    Select(driver.find_element(By.NAME, "platform")).select_by_value("wechat")
    go(driver, driver.find_element(By.ID, "apply"))
    query = parse_qs(urlsplit(driver.current_url).query)
    assert query["platform"] == ["wechat"] and "from" in query and "to" in query
    Select(driver.find_element(By.NAME, "channel")).select_by_value("live")
    go(driver, driver.find_element(By.ID, "apply"))
    query = parse_qs(urlsplit(driver.current_url).query)
    assert (query["platform"], query["channel"]) == (["wechat"], ["live"])
    api_query = (f"by=platform&platform=wechat&channel=live&from={query['from'][0]}"
                 f"&to={query['to'][0]}")
    filtered = live.settled_stats(api_query, clicks=1)
    assert [r["clicks"] for r in filtered["rows"]] == [1]
    assert _table(driver, "platform-table") == _as_shown(filtered["rows"], "platform")
    screenshot(driver, "dashboard-filtered", full=True)

    # The CSV download is what is on screen: the API's CSV for the same filters.
    driver.find_element(By.ID, "csv-platform").click()
    deadline = time.monotonic() + 20
    while not _downloaded(downloads) and time.monotonic() < deadline:
        time.sleep(0.1)
    files = list(downloads.glob("*.csv"))
    assert len(files) == 1, list(downloads.iterdir())
    assert files[0].name == f"linkloop-platform-{query['from'][0]}-{query['to'][0]}.csv"
    downloaded = files[0].read_text(encoding="utf-8")
    assert downloaded == live.api("GET", f"/api/stats?{api_query}&format=csv", marketing=True)
    assert list(csv.reader(io.StringIO(downloaded)))[1][:2] == ["wechat", "1"]

    # Products, and one product's page with its QR code.
    go(driver, driver.find_element(By.LINK_TEXT, "商品"))
    assert urlsplit(driver.current_url).path == "/dashboard/products"
    screenshot(driver, "dashboard-products", full=True)
    go(driver, driver.find_element(By.LINK_TEXT, "明前龙井 250g"))
    assert urlsplit(driver.current_url).path == f"/dashboard/products/{live.product['id']}"
    assert driver.find_element(By.ID, "qr-link").text == live.product["share_url"]
    screenshot(driver, "dashboard-product", full=True)

    # Logging out ends the session.
    go(driver, driver.find_element(By.ID, "logout"))
    assert "你已退出登录" in driver.find_element(By.TAG_NAME, "main").text
    driver.get(f"{live.base}/dashboard")
    assert urlsplit(driver.current_url).path == "/dashboard/login"
