"""Mini-program pages in a real browser: headless Chromium against a gateway process, with
the fake WeChat API (and its stand-in for WeChat's JS-SDK) served from a thread over
loopback. Screenshots at 390 px (a phone) and 1280 px under ``test-artifacts/browser/``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .fake_wechat import APP_SECRET, APPID, OA_APPID, OA_SECRET, FakeWeChat
from .test_browser import (  # noqa: F401 -- fixtures
    Browser,
    Live,
    browser,
    chromium,
    decode_qr,
    gateway_process,
    go,
    resources,
    screenshot,
    zbar,
)
from .test_cli import run
from .thread_server import serve_in_thread
from .wait import until_sync

WECHAT_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) "
              "NetType/WIFI Language/zh_CN")
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/120.0.6099.193 Mobile Safari/537.36")
JSSDK_PATH = "/open/js/jweixin-1.6.0.js"
MINI = {"appid": APPID, "path": "pages/item/index", "query": "id=42", "name": "茶庄商城"}
STORES = {"jd": {"sku": "100000000001"}, "taobao": {"item_id": "600000000001",
                                                    "share_token": "￥AbC123￥"}}


@dataclass
class FakeServer:
    fake: FakeWeChat
    base: str


@pytest.fixture(scope="module")
def wechat_api() -> Iterator[FakeServer]:
    """The fake WeChat API on its own event loop, in a thread: the gateway process calls it
    while the test drives the browser."""
    fake = FakeWeChat()
    with serve_in_thread(fake.app()) as base:
        yield FakeServer(fake, base)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, chromium: None,  # noqa: F811
         wechat_api: FakeServer) -> Iterator[dict[str, Any]]:
    """Three merchants: one with an official account (the open tag), one with the
    mini-program's credentials whose URL Links WeChat refuses (the code), one with nothing."""
    home = tmp_path_factory.mktemp("mini-browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env.update(LINKLOOP_STORAGE_DATA_DIR=str(home / "data"), PYTHONUNBUFFERED="1",
               LINKLOOP_WECHAT_API_BASE=wechat_api.base,
               LINKLOOP_WECHAT_JSSDK_URL=wechat_api.base + JSSDK_PATH)
    tokens = {}
    for merchant in ("tagged", "coded", "bare"):
        done = run(env, "merchant", "create", merchant, "--name", "茶庄", "--domain",
                   "shop.acme.cn")
        assert done.returncode == 0, done.stderr
        tokens[merchant] = run(env, "token", "--merchant", merchant, "--role",
                               "merchant").stdout.strip()
    with gateway_process(env, home / "gateway.log") as base:
        def api(merchant: str, method: str, path: str, body: Any) -> Any:
            live = Live(base, env, tokens[merchant], tokens[merchant], {}, home / "gateway.log")
            return live.api(method, path, body)

        api("tagged", "PUT", "/api/credentials/wechat_official_account",
            {"appid": OA_APPID, "secret": OA_SECRET})
        api("coded", "PUT", "/api/credentials/wechat_miniprogram",
            {"appid": APPID, "secret": APP_SECRET})
        wechat_api.fake.fail_next["wxa/generate_urllink"] = [40002]  # 暂无生成权限
        title = {"title": "明前龙井 250g", "price": 168}
        products = {
            merchant: api(merchant, "POST", "/api/products", {
                **title, "targets": {"wechat_miniprogram": MINI, **STORES}})
            for merchant in ("tagged", "coded", "bare")}
        products["only"] = api("bare", "POST", "/api/products", {
            **title, "targets": {"wechat_miniprogram": MINI}})
        yield {"base": base, "products": products, "api": api}


WIDTHS = pytest.mark.parametrize("width", [390, 1280])


def _open(browser: Browser, ua: str, url: str, width: int) -> WebDriver:  # noqa: F811
    """A phone (390 px wide) or a desktop window (1280 px) with the given User-Agent."""
    driver = browser(ua, phone=width < 1000)
    driver.get(url)
    return driver


@WIDTHS
def test_open_tag_in_wechat(width: int, shop: dict[str, Any],
                            browser: Browser, wechat_api: FakeServer) -> None:  # noqa: F811
    url = shop["products"]["tagged"]["share_url"] + f"?ch=moments{width}"
    driver = _open(browser, WECHAT_IOS, url, width)
    tag = driver.find_element(By.ID, "open-tag")
    assert tag.get_attribute("appid") == APPID
    assert tag.get_attribute("path") == "pages/item/index.html?id=42"
    # What the page handed wx.config (WeChat's JS-SDK, here the fake's stand-in).
    config = WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return window.__wxConfig || null"))
    assert config["appId"] == OA_APPID and config["openTagList"] == ["wx-open-launch-weapp"]
    page_url = driver.execute_script("return location.href.split('#')[0]")
    plain = (f"jsapi_ticket={wechat_api.fake.ticket}&noncestr={config['nonceStr']}"
             f"&timestamp={config['timestamp']}&url={page_url}")
    assert config["signature"] == hashlib.sha1(plain.encode()).hexdigest()
    # WeChat's JS-SDK is the one thing fetched from elsewhere.
    assert resources(driver) == [wechat_api.base + JSSDK_PATH]
    card = driver.find_element(By.ID, "miniprogram")
    assert card.is_displayed() and "打开小程序购买" in card.text
    assert not driver.find_element(By.ID, "find-help").is_displayed()
    screenshot(driver, f"mini-wechat-open-tag-{width}", full=True)
    # The shopper taps the button and WeChat opens the mini-program: a storefront open of
    # this click, in the merchant's funnel.
    tag.click()

    def funnel() -> list[tuple[int, int]]:
        rows = shop["api"]("tagged", "GET", f"/api/stats?by=channel&channel=moments{width}",
                           None)["rows"]
        return [(row["clicks"], row["storefront_opens"]) for row in rows]

    until_sync(lambda: funnel() == [(1, 1)], what="clicks and opens: 1 and 1")


def test_a_launch_that_fails_reports_no_open(shop: dict[str, Any], browser: Browser,  # noqa: F811
                                              ) -> None:
    # WeChat could not open the mini-program (the tag fires error, not launch): the page
    # shows the other ways in, and tells the gateway nothing.
    driver = _open(browser, WECHAT_IOS, shop["products"]["tagged"]["share_url"], 390)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return !!window.__wxConfig"))
    driver.execute_script(
        "window.__wxLaunchFails=true;window.__told=[];"
        "navigator.sendBeacon=function(u){window.__told.push(u);return true;};"
        "window.fetch=function(u){window.__told.push(u);return Promise.resolve();};")
    driver.find_element(By.ID, "open-tag").click()
    assert driver.find_element(By.ID, "find-help").is_displayed()
    assert driver.execute_script("return window.__told") == []


@WIDTHS
def test_mini_program_code_in_wechat(width: int, shop: dict[str, Any],
                                     browser: Browser, zbar: str) -> None:  # noqa: F811
    driver = _open(browser, WECHAT_IOS, shop["products"]["coded"]["share_url"], width)
    figure = driver.find_element(By.ID, "wxacode")
    assert "长按识别小程序码" in figure.text
    image = figure.find_element(By.TAG_NAME, "img")
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", image))
    assert decode_qr(zbar, image.screenshot_as_png) == [
        "wxacode:pages/item/index?scene=id=42"]
    assert [urlsplit(r).path for r in resources(driver)] == [
        f"/p/{shop['products']['coded']['code']}/miniprogram-code"]
    screenshot(driver, f"mini-wechat-code-{width}", full=True)


@WIDTHS
def test_wechat_without_credentials_gets_help(width: int, shop: dict[str, Any],
                                              browser: Browser) -> None:  # noqa: F811
    driver = _open(browser, WECHAT_IOS, shop["products"]["bare"]["share_url"], width)
    steps = driver.find_element(By.ID, "find-steps")
    assert steps.is_displayed() and "搜索「茶庄商城」" in steps.text
    assert "在Safari中打开" in steps.text  # WeChat's own words on an iPhone
    stores = driver.find_element(By.ID, "stores")
    assert [e.get_attribute("data-platform")
            for e in stores.find_elements(By.CSS_SELECTOR, "a[data-platform]")] == ["jd"]
    assert resources(driver) == []
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width
    screenshot(driver, f"mini-wechat-help-{width}", full=True)


@WIDTHS
def test_launch_page_on_android(width: int, shop: dict[str, Any],
                                browser: Browser) -> None:  # noqa: F811
    driver = _open(browser, ANDROID_CHROME, shop["products"]["only"]["share_url"], width)
    button = driver.find_element(By.ID, "launch-button")
    assert button.text == "打开微信小程序"
    fallback = driver.find_element(By.ID, "fallback")
    assert not fallback.is_displayed()
    screenshot(driver, f"mini-launch-{width}")
    button.click()
    # No WeChat here: two seconds on, the page says what to do.
    WebDriverWait(driver, 10).until(lambda d: fallback.is_displayed())
    assert "没有打开微信？" in fallback.text and "搜索「茶庄商城」" in fallback.text
    assert urlsplit(driver.current_url).path == f"/p/{shop['products']['only']['code']}"
    screenshot(driver, f"mini-launch-fallback-{width}", full=True)


DOUYIN_ANDROID = ("Mozilla/5.0 (Linux; Android 14; V2244A; wv) AppleWebKit/537.36 (KHTML, "
                  "like Gecko) Version/4.0 Chrome/120.0.6099.193 Mobile Safari/537.36 "
                  "aweme_300100 JsSdk/1.0 NetType/WIFI AppName/aweme app_version/30.1.0")


@WIDTHS
def test_another_app_tries_the_mini_program_through_the_launch_page(
    width: int, shop: dict[str, Any], browser: Browser,  # noqa: F811
) -> None:
    driver = _open(browser, DOUYIN_ANDROID, shop["products"]["bare"]["share_url"], width)
    mini = driver.find_element(By.CSS_SELECTOR, '.blocked[data-platform="wechat_miniprogram"]')
    button = mini.find_element(By.TAG_NAME, "a")
    assert button.text == "打开微信小程序" and button.is_displayed()
    screenshot(driver, f"mini-douyin-landing-{width}", full=True)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    go(driver, button)
    driver.find_element(By.ID, "launch-button").click()
    fallback = driver.find_element(By.ID, "fallback")
    WebDriverWait(driver, 10).until(lambda d: fallback.is_displayed())
    # Douyin may refuse weixin://: the way out is Douyin's own "open in browser".
    assert "右上角" in fallback.text and "在浏览器打开" in fallback.text
    screenshot(driver, f"mini-douyin-launch-fallback-{width}", full=True)
