"""The one URL check (adapters/urls.py), as one table: what a browser would do with each URL.

Every row is a URL a merchant might send, with the allow list it is checked against, and
either the URL the gateway stores (the browser's own serialisation) or the refusal's code.
The hostile rows are the tricks that make a lesser parser and a browser disagree on the
host; each was accepted by at least one of the gateway's earlier ad-hoc checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters import ADAPTERS, TargetError
from adapters.urls import ANY_PUBLIC_HOST, check_url
from gateway.app import create_app

from .conftest import PRODUCT, TAOBAO_UA, Tenant, add_tenant, create_product, make_settings
from .fake_wechat import APP_SECRET, APPID, FakeWeChat
from .test_adapters import GOOD
from .test_wechat_links import WECHAT_UA

JD = ("jd.com",)
SHOP = ("shop.example.com",)
ANY = ANY_PUBLIC_HOST
BAD = "invalid_url"
HOST = "host_not_allowed"
# Refusals whose message says why (what the merchant reads), as code/words-in-the-message.
CHARS = "invalid_url/contains whitespace, a backslash or a control character"
INVISIBLE = "invalid_url/no whitespace, control or invisible characters"
SCHEME = "invalid_url/must be an absolute https URL"
CREDENTIALS = "invalid_url/must not carry credentials"
PORT = "invalid_url/must not name a port"
IP = "invalid_url/must name its host, not an IP address"
PLAIN = "invalid_url/must be a plain domain name"
PUNYCODE = "invalid_url/broken xn-- label"
LOCAL = "invalid_url/is not a public name"
ANOTHER = "invalid_url/is read by browsers as another host"
UNPARSED = "invalid_url/is not a valid URL"
LONG = "invalid_url/is longer than 2048 characters"
ENCODED = "invalid_url/once encoded"

TABLE: list[tuple[str, tuple[str, ...] | None, str]] = [
    # --- accepted, stored as a browser serialises them -------------------------------------
    ("https://item.jd.com/100000000001.html", JD, "https://item.jd.com/100000000001.html"),
    ("https://jd.com", JD, "https://jd.com/"),
    ("HTTPS://Item.JD.com/x?a=1#top", JD, "https://item.jd.com/x?a=1#top"),
    ("https://shop.example.com/茶/龙井?q=明前", SHOP,
     "https://shop.example.com/%E8%8C%B6/%E9%BE%99%E4%BA%95?q=%E6%98%8E%E5%89%8D"),
    ("https://shop.example.com/a\"b<c>", SHOP, "https://shop.example.com/a%22b%3Cc%3E"),
    ("https://xn--fiqs8s.example.com/x", ANY, "https://xn--fiqs8s.example.com/x"),
    ("https://img.cdn-1.example.net/p.jpg", ANY, "https://img.cdn-1.example.net/p.jpg"),
    ("https://Xiaomi.JD.com/SKU-X1", JD, "https://xiaomi.jd.com/SKU-X1"),
    ("https://XN--fiqs8s.example.com/", ANY, "https://xn--fiqs8s.example.com/"),
    # --- another host hidden in the authority ---------------------------------------------
    ("https://jd.com@evil.com", JD, CREDENTIALS),
    ("https://jd.com:x@evil.com/", JD, CREDENTIALS),
    ("https://evil.com\\@jd.com", JD, CHARS),
    ("https://evil.com%5C@jd.com", JD, CREDENTIALS),
    ("https://evil.com%2F@jd.com", JD, CREDENTIALS),
    ("https://evil.com#@jd.com", JD, HOST),
    ("https://evil.com?@jd.com", JD, HOST),
    ("https://jd.com.evil.com", JD, HOST),
    ("https://evil-jd.com/", JD, HOST),
    ("https://notjd.com/", JD, HOST),
    # --- characters a browser drops, folds or maps -----------------------------------------
    ("https://j\td.com/x", JD, CHARS),
    ("https://jd.com/a\nb", JD, BAD),
    ("https://jd.com/a\rb", JD, BAD),
    ("https://evil\n.com@jd.com", JD, BAD),
    (" https://jd.com/", JD, BAD),
    ("https://jd.com/ x", JD, BAD),
    ("https://jd.com/\x00", JD, BAD),
    ("https://jd.com/\x7f", JD, BAD),
    ("https://jd.com/\x85", JD, BAD),
    ("https://jd.com/\u00a0", JD, BAD),
    ("https://jd.com/\u3000", JD, BAD),
    ("https://jd.com/\u2028", JD, BAD),
    ("https://jd.com/\u200b", JD, INVISIBLE),
    ("https://jd\u200b.com/", JD, BAD),
    ("https://jd.com/\u202egpj.exe", JD, BAD),
    ("https://jd.com/\ufeff", JD, BAD),
    ("https://jd.com/\ud800", JD, INVISIBLE),
    ("https://\udfffjd.com/", JD, BAD),
    # --- schemes and scheme-relative forms ---------------------------------------------------
    ("https:/\\evil.com", JD, CHARS),
    ("https:\\\\evil.com", JD, BAD),
    ("https:evil.com", ANY, SCHEME),
    ("https:/evil.com", ANY, BAD),
    ("https:///evil.com", ANY, BAD),
    ("//evil.com", ANY, SCHEME),
    ("/\\evil.com", ANY, BAD),
    ("javascript:alert(1)", ANY, SCHEME),
    ("JaVaScRiPt:alert(1)//https://jd.com", JD, BAD),
    ("data:text/html,<script>alert(1)</script>", ANY, BAD),
    ("http://item.jd.com/1.html", JD, BAD),
    ("ftp://jd.com/", JD, BAD),
    ("httpsx://jd.com/", JD, BAD),
    ("jd.com/1.html", JD, BAD),
    ("", JD, BAD),
    # --- hosts a browser decodes into another name -------------------------------------------
    ("https://%65vil.com", ANY, PLAIN),
    ("https://jd%2ecom/", JD, BAD),
    ("https://evil。com", ANY, PLAIN),
    ("https://evil．com", ANY, BAD),
    ("https://jd。com", JD, BAD),
    ("https://ＪＤ.com/x", JD, BAD),
    ("https://еvil.com/", ANY, BAD),  # a Cyrillic е
    ("https://京东.com/", ANY, BAD),
    ("https://jd.com./x", JD, BAD),
    ("https://jd..com/", JD, BAD),
    ("https://.jd.com/", JD, BAD),
    ("https://-jd.com/", JD, BAD),
    ("https://jd-.com/", JD, BAD),
    ("https://jd_shop.com/", ANY, BAD),
    ("https://jd/", ANY, BAD),
    ("https://localhost/x.png", ANY, PLAIN),
    ("https://img.localhost/x.png", ANY, LOCAL),
    ("https://" + "a" * 64 + ".com/", ANY, BAD),
    ("https://", ANY, BAD),
    ("https:///", ANY, BAD),
    ("https://?x", ANY, BAD),
    ("https://?@jd.com/", JD, PLAIN),  # no host at all, whatever follows the "?"
    ("https://#@jd.com/", JD, PLAIN),
    # --- ports ---------------------------------------------------------------------------------
    ("https://jd.com:443/", JD, PORT),
    ("https://jd.com:8443/", JD, PORT),
    ("https://jd.com:/", JD, PORT),
    ("https://jd.com:0/", JD, PORT),
    ("https://jd.com:99999/", JD, PORT),
    ("https://evil.com:443@jd.com/", JD, CREDENTIALS),
    # --- IP literals, in every spelling a browser reads as one -------------------------------
    ("https://127.0.0.1/", ANY, IP),
    ("https://10.0.0.1/x.png", ANY, IP),
    ("https://2130706433/", ANY, PLAIN),
    ("https://0x7f.1/", ANY, IP),
    ("https://0x7f000001/", ANY, BAD),
    ("https://0177.0.0.1/", ANY, IP),
    ("https://1.0x7f/", ANY, ANOTHER),
    ("https://jd.com.0x7f/", JD, UNPARSED),
    ("https://[::1]/", ANY, IP),
    ("https://[::ffff:127.0.0.1]/", ANY, IP),
    ("https://[fe80::1%25eth0]/", ANY, IP),
    # --- a broken punycode label ---------------------------------------------------------------
    ("https://xn--.example.com/", ANY, BAD),
    ("https://xn--a.example.com/", ANY, PUNYCODE),
    ("https://xn--jd-abc.com/", ANY, PUNYCODE),
    ("https://img.xn--a.example.com/", ANY, PUNYCODE),  # each label is checked, not the first
    # --- lengths -------------------------------------------------------------------------------
    ("https://jd.com/" + "a" * 2033, JD, "https://jd.com/" + "a" * 2033),  # 2,048: the most
    ("https://jd.com/" + "a" * 2034, JD, LONG),
    ("https://jd.com/" + "茶" * 700, JD, ENCODED),
]


def _outcome(url: str, hosts: tuple[str, ...] | None, expected: str) -> str:
    try:
        return check_url(url, "targets.jd.url", hosts)
    except TargetError as exc:
        assert exc.field == "targets.jd.url"
        assert exc.message.startswith("targets.jd.url ")
        words = expected.partition("/")[2]
        # The words start a word of the sentence the merchant reads ("... must not name a port").
        return f"{exc.code}/{words}" if words and f" {words}" in exc.message else exc.code


@pytest.mark.parametrize(("url", "hosts", "expected"), TABLE,
                         # Plain ids (row number, URL in letters and digits): mutmut names the
                         # tests it selects by node id, which "::", "\\" or quotes would break.
                         ids=[f"{i:03d}-" + re.sub(r"[^A-Za-z0-9.-]+", "_", row[0])[:50]
                              for i, row in enumerate(TABLE)])
def test_one_url_check(url: str, hosts: tuple[str, ...] | None, expected: str) -> None:
    assert _outcome(url, hosts, expected) == expected


def test_what_is_stored_reads_the_same_to_every_parser() -> None:
    """An accepted URL, once stored, passes the check again unchanged (nothing left to fold)."""
    for _url, hosts, expected in TABLE:
        if expected.startswith("https://"):
            assert check_url(expected, "url", hosts) == expected


@pytest.mark.parametrize("value", [None, 42, ["https://jd.com/"], {"url": "https://jd.com/"}])
def test_a_url_is_a_string(value: object) -> None:
    with pytest.raises(TargetError) as caught:
        check_url(value, "image_url", ANY_PUBLIC_HOST)
    assert (caught.value.code, caught.value.field) == ("invalid_url", "image_url")
    assert caught.value.message == "image_url must be a URL string"  # what the merchant reads


def test_an_empty_allow_list_allows_nothing() -> None:
    with pytest.raises(TargetError) as caught:
        check_url("https://shop.example.com/", "targets.web.url", ())
    assert caught.value.code == "host_not_allowed"
    assert caught.value.message == (
        "targets.web.url host 'shop.example.com' is not one of: none")


def test_a_refused_host_is_told_which_hosts_are_allowed() -> None:
    with pytest.raises(TargetError) as caught:
        check_url("https://Shop.Evil.com/x", "targets.jd.url", ("jd.com", "3.cn"))
    assert (caught.value.code, caught.value.message) == (
        "host_not_allowed", "targets.jd.url host 'shop.evil.com' is not one of: jd.com, 3.cn")


# --- the one check, used everywhere a URL comes in ------------------------------------------
# Each surface gets URLs whose *visible* host is allowed there while a browser goes elsewhere
# (or that carry what broke pages before): all refused with the field named, nothing stored.
HIDDEN = "https://evil.example.net\\@{host}/x"  # urlsplit: {host}; a browser: evil.example.net
SURFACES: list[tuple[str, str, str]] = [
    *[(f"targets.{a.platform}.url", a.platform, a.owned_hosts[0])
      for a in ADAPTERS if a.is_target and a.owned_hosts],
    ("targets.web.url", "web", "shop.example.com"),
]


# A valid target per platform (the adapters' own table), to hang a URL on.
BASE_TARGETS = {platform: raw for platform, raw, *_ in reversed(GOOD)}


def _product_with_url(platform: str, url: str) -> dict[str, Any]:
    return {"title": "茶", "targets": {platform: {**BASE_TARGETS[platform], "url": url}}}


@pytest.mark.parametrize(("field", "platform", "host"), SURFACES, ids=[s[0] for s in SURFACES])
async def test_every_target_url_goes_through_the_check(
    client: TestClient[Any, Any], tenant: Tenant, field: str, platform: str, host: str,
) -> None:
    # (A lone surrogate never gets this far: tests/test_hostile_input.py.)
    for url in (f"https://{host}:8443/", HIDDEN.format(host=host), f"https://{host}/\x00",
                f"https://{host}@evil.example.net/", f"https://{host}/a\u2028b"):
        resp = await client.post("/api/products", json=_product_with_url(platform, url),
                                 headers=tenant.auth)
        body = await resp.json()
        assert (resp.status, body["error"]["code"], body["error"]["field"]) == (
            422, "invalid_url", field), (url, body)
    good = await client.post("/api/products", json=_product_with_url(
        platform, f"https://{host}/item"), headers=tenant.auth)
    assert good.status == 201, await good.text()
    listing = await (await client.get("/api/products", headers=tenant.auth)).json()
    assert [p["targets"][platform]["url"] for p in listing["items"]] == [f"https://{host}/item"]


async def test_image_url_goes_through_the_check(client: TestClient[Any, Any],
                                                tenant: Tenant) -> None:
    product = await create_product(client, tenant)
    for url in ("https://evil.example.net\\@img.example.com/x.png", "https://127.0.0.1/x.png",
                "https://img.example.com/\x00.png", "https://img.example.com/\u202e.png",
                "javascript:alert(1)", "//img.example.com/x.png"):
        created = await client.post("/api/products", json={**PRODUCT, "image_url": url},
                                    headers=tenant.auth)
        changed = await client.patch(f"/api/products/{product['id']}", json={"image_url": url},
                                     headers=tenant.auth)
        for resp in (created, changed):
            error = (await resp.json())["error"]
            assert (resp.status, error["code"], error["field"]) == (
                422, "invalid_url", "image_url"), url
    listing = await (await client.get("/api/products", headers=tenant.auth)).json()
    assert [p["image_url"] for p in listing["items"]] == [PRODUCT["image_url"]]


async def test_entry_urls_go_through_the_check(client: TestClient[Any, Any],
                                               tenant: Tenant) -> None:
    """The entry's ``url`` is redirected to and its ``qr_url`` shown: the same check."""
    good = {"kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawgood"}
    assert (await client.put("/api/entry", json=good, headers=tenant.auth)).status == 200
    refused = [
        ({"kind": "acquisition_link",
          "url": "https://evil.example.net\\@work.weixin.qq.com/ca/cawx"}, "url"),
        ({"kind": "acquisition_link", "url": "https://work.weixin.qq.com@evil.example.net/ca/x"},
         "url"),
        ({"kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/x\x00"}, "url"),
        ({"kind": "acquisition_link", "url": "https://work.weixin.qq.com:444/ca/x"}, "url"),
        ({"kind": "static", "qr_url": "https://img.example.com/q\x00.png"}, "qr_url"),
        ({"kind": "static", "qr_url": "https://img.example.com/q\u202e.png"}, "qr_url"),
        ({"kind": "static", "qr_url": "https://[::1]/q.png"}, "qr_url"),
    ]
    for body, field in refused:
        resp = await client.put("/api/entry", json=body, headers=tenant.auth)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["field"]) == (422, "invalid_url", field), body
    stored = await (await client.get("/api/entry", headers=tenant.auth)).json()
    assert stored["url"] == good["url"]
    # The shopper's hop goes to WeCom's host and nowhere else.
    product = await create_product(client, tenant)
    hop = await client.get(f"/e/{product['code']}", allow_redirects=False,
                           headers={"User-Agent": TAOBAO_UA})
    assert hop.status == 302
    assert hop.headers["Location"].startswith("https://work.weixin.qq.com/ca/cawgood?")


async def test_a_minted_url_link_goes_through_the_check(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path,
) -> None:
    """A URL Link WeChat's API answers is a redirect target too: checked like the rest."""
    wechat = FakeWeChat(url_link="https://evil.example.net\\@wxaurl.cn/fake{n}")
    server = await aiohttp_server(wechat.app())
    gateway = await aiohttp_client(create_app(make_settings(
        tmp_path, wechat__api_base=str(server.make_url("/")))))
    tenant = await add_tenant(gateway, "acme")
    resp = await gateway.put("/api/credentials/wechat_miniprogram",
                             json={"appid": APPID, "secret": APP_SECRET}, headers=tenant.auth)
    assert resp.status == 200
    product = await create_product(gateway, tenant, {"title": "礼盒", "targets": {
        "wechat_miniprogram": {"appid": APPID, "path": "pages/item/index"}}})
    # Minted when the product was made, and refused: nothing stored to send anyone to.
    assert product["minted"]["url_link"]["value"] is None
    assert product["minted"]["url_link"]["error"]
    for _ in range(2):
        page = await gateway.get(f"/p/{product['code']}", allow_redirects=False,
                                 headers={"User-Agent": WECHAT_UA})
        assert page.status == 200  # the page that helps, never the answer WeChat gave
        assert "evil.example.net" not in await page.text()
    assert len(wechat.minted) == 1  # minted once, refused, not asked again at once
