"""The closed loop: entry point, /e/ hop, WeCom callbacks, attribution, against a fake WeCom."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.alerts import ALERT_KINDS
from gateway.app import create_app
from gateway.appkeys import CALLBACKS, RECORDER, STORE
from gateway.logs import configure_logging

from .conftest import DESKTOP_UA, Tenant, add_tenant, make_settings
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .wait import until

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 "
             "MicroMessenger/8.0.40(0x18002831) NetType/WIFI")
DOUYIN_UA = ("Mozilla/5.0 (Linux; Android 13; V2203A) AppleWebKit/537.36 Mobile Safari/537.36 "
             "aweme_260400 JsSdk/2.0 NetType/WIFI Channel/douyin_tengxun_wzl_1108 app_version/26.4.0")
ACQUISITION = "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f"
CALLBACK_SECRETS = {"corp_id": CORP_ID, "secret": SECRET, "callback_token": CALLBACK_TOKEN,
                    "encoding_aes_key": AES_KEY}
# A product every app shows a landing page for (WeChat and Douyin both block Taobao).
PRODUCT = {"title": "明前龙井", "targets": {"taobao": {"item_id": "600000000001"},
                                            "web": {"url": "https://shop.example.com/tea"}}}


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeWeCom, TestServer]:
    wecom = FakeWeCom()
    server = await aiohttp_server(wecom.app())
    return wecom, server


@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path, fake: tuple[FakeWeCom, TestServer],
                  capsys: Any) -> TestClient[Any, Any]:
    configure_logging("info", "json")
    _, server = fake
    settings = make_settings(tmp_path, wecom__api_base=str(server.make_url("/cgi-bin")),
                             wecom__timeout_seconds=1.0)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def _entry(client: TestClient[Any, Any], tenant: Tenant, **body: Any) -> dict[str, Any]:
    resp = await client.put("/api/entry", json=body, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def _two_tenants_taking_callbacks(gateway: TestClient[Any, Any]) -> tuple[Tenant, Tenant]:
    """acme and other, each with an acquisition link entry whose callbacks we can sign."""
    acme = await add_tenant(gateway, "acme")
    other = await add_tenant(gateway, "other")
    for tenant in (acme, other):
        await _entry(gateway, tenant, kind="acquisition_link", url=ACQUISITION,
                     **CALLBACK_SECRETS)
    return acme, other


async def _landing_entry_link(client: TestClient[Any, Any], code: str, ua: str) -> str:
    page = await (await client.get(f"/p/{code}", headers={"User-Agent": ua})).text()
    links = re.findall(r'href="(/e/[^"]+)"', page)
    assert len(links) == 1, page
    return links[0]


async def _settle(client: TestClient[Any, Any]) -> None:
    """Let the callback worker and the recorder finish what they were handed."""
    app = client.app
    assert app is not None

    async def settled() -> bool:
        await app[CALLBACKS].drain()  # waits for a drain the worker may have under way
        await app[RECORDER].flush()
        return not await app[STORE].pending_callbacks(1) and not app[RECORDER].pending

    await until(settled, what="callbacks worked and their events written")


async def _stats(client: TestClient[Any, Any], tenant: Tenant) -> dict[str, dict[str, Any]]:
    await _settle(client)
    body = await (await client.get("/api/stats?by=platform", headers=tenant.auth)).json()
    return {row["platform"]: row for row in body["rows"]}


def _adds(client: TestClient[Any, Any]) -> list[tuple[Any, ...]]:
    assert client.app is not None
    conn = client.app[STORE]._rconn  # the test reads what storage holds
    return conn.execute("SELECT platform, click_id, product_id FROM events WHERE kind = 'add' "
                        "ORDER BY platform").fetchall()


async def test_entry_secrets_are_write_only(gateway: TestClient[Any, Any]) -> None:
    tenant = await add_tenant(gateway, "acme")
    shown = await _entry(gateway, tenant, kind="acquisition_link", url=ACQUISITION,
                         **CALLBACK_SECRETS)
    assert shown["url"] == ACQUISITION and shown["secret_set"] and shown["corp_id_set"]
    assert shown["callback_url"] == "https://go.test/wecom/callback/acme"
    text = json.dumps(shown) + await (await gateway.get("/api/entry",
                                                        headers=tenant.auth)).text()
    for secret in CALLBACK_SECRETS.values():
        assert secret not in text
    # Changing the kind keeps secrets that were not sent again.
    stats = await (await gateway.get("/api/stats", headers=tenant.auth)).json()
    assert stats["attribution"] == "adds"
    changed = await _entry(gateway, tenant, kind="static", qr_url="https://img.example.com/q.png")
    assert changed["secret_set"] and changed["attribution"] == "visits_only"
    stats = await (await gateway.get("/api/stats", headers=tenant.auth)).json()
    assert stats["attribution"] == "visits_only"


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"kind": "phone"}, "invalid_field", "kind"),
    ({"kind": "acquisition_link", "url": "https://evil.example.net/ca/x"}, "host_not_allowed",
     "url"),
    ({"kind": "contact_way", "users": ["zhangsan"]}, "missing_field", "corp_id"),
    ({"kind": "contact_way", "users": [], "corp_id": CORP_ID, "secret": SECRET},
     "invalid_field", "users"),
    ({"kind": "group", "chat_ids": ["wr1"], "corp_id": "nope", "secret": SECRET},
     "invalid_field", "corp_id"),
    ({"kind": "static", "qr_url": "https://x.example.com/q.png", "callback_token": "abc"},
     "missing_field", "callback_token"),
    ({"kind": "static", "qr_url": "http://x.example.com/q.png"}, "invalid_url", "qr_url"),
    ({"kind": "static", "qr_url": "https://x.example.com/q.png", "colour": 1},
     "unknown_field", "colour"),
])
async def test_bad_entries_are_refused(gateway: TestClient[Any, Any], body: dict[str, Any],
                                       code: str, field: str) -> None:
    tenant = await add_tenant(gateway, "acme")
    resp = await gateway.put("/api/entry", json=body, headers=tenant.auth)
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == code
    assert (await resp.json())["error"]["field"] == field
    assert (await gateway.get("/api/entry", headers=tenant.auth)).status == 404
    marketing = await gateway.put("/api/entry", json={"kind": "static", "qr_url":
                                  "https://x.example.com/q.png"}, headers=tenant.marketing_auth)
    assert marketing.status == 403


async def test_the_closed_loop_from_three_platforms(gateway: TestClient[Any, Any],
                                                    capsys: Any) -> None:
    """WeChat, Douyin and a desktop shopper each enter; WeCom's adds come back attributed."""
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="acquisition_link", url=ACQUISITION, **CALLBACK_SECRETS)
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=tenant.auth)).json()
    states = {}
    for name, ua in (("wechat", WECHAT_UA), ("douyin", DOUYIN_UA), ("web", DESKTOP_UA)):
        gateway.session.cookie_jar.clear()
        hop = await _landing_entry_link(gateway, product["code"], ua)
        resp = await gateway.get(hop, headers={"User-Agent": ua}, allow_redirects=False)
        if name == "web":  # a desktop can't open WeCom: a page with the link and its QR
            assert resp.status == 200
            page = await resp.text()
            assert "<svg" in page
            link = re.search(r'href="(https://work\.weixin\.qq\.com/ca/[^"]+)"', page)
            assert link
            url = link.group(1).replace("&amp;", "&")
        else:
            assert resp.status == 302
            url = resp.headers["Location"]
        assert url.startswith(ACQUISITION + "?customer_channel=")
        states[name] = parse_qs(urlsplit(url).query)["customer_channel"][0]
        assert len(states[name].encode()) <= 64
    await _settle(gateway)
    # WeCom hands the customer_channel back as State when each shopper adds the contact.
    async with __import__("aiohttp").ClientSession() as http:
        for n, (_name, state) in enumerate(states.items()):
            resp = await FakeWeCom.post(http, str(gateway.make_url("/wecom/callback/acme")),
                                        FakeWeCom.add_contact_event(state, f"wmEXT{n}"))
            assert resp.status == 200
            assert await resp.text() == "success"
    rows = await _stats(gateway, tenant)
    for name in ("wechat", "douyin", "web"):
        assert rows[name]["clicks"] == 1, name
        assert rows[name]["entries"] == 1, name
        assert rows[name]["adds"] == 1, name
        assert rows[name]["add_rate"] == 1.0
    # ... each joined to its click and product: the wristband came back.
    assert gateway.app is not None
    clicks = dict(gateway.app[STORE]._rconn.execute(
        "SELECT platform, id FROM clicks").fetchall())
    assert _adds(gateway) == [(p, clicks[p], product["id"]) for p in sorted(states)]
    # No secret in any log line of the whole exchange.
    logs = capsys.readouterr()
    assert logs.err.count('"event": "callback.add"') == 3  # each callback worked once
    for secret in CALLBACK_SECRETS.values():
        assert secret not in logs.err + logs.out


async def test_contact_way_is_made_once_per_platform(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    wecom, _ = fake
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="contact_way", users=["zhangsan", "lisi"],
                 **CALLBACK_SECRETS)
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=tenant.auth)).json()
    wecom.expire_token_once = True  # the first call meets an expired token: refresh, retry
    pages = []
    for _ in range(2):
        hop = await _landing_entry_link(gateway, product["code"], WECHAT_UA)
        resp = await gateway.get(hop, headers={"User-Agent": WECHAT_UA})
        assert resp.status == 200
        pages.append(await resp.text())
    assert len(wecom.contact_ways) == 1  # reused, not made twice
    (config_id, way), = wecom.contact_ways.items()
    assert way["user"] == ["zhangsan", "lisi"] and way["type"] == 2
    assert all(f"https://wework.qpic.cn/fake/{config_id}.png" in p for p in pages)
    assert wecom.tokens_issued == 2
    # The add comes back with the way's state: attributed to WeChat (no click in it).
    async with __import__("aiohttp").ClientSession() as http:
        await FakeWeCom.post(http, str(gateway.make_url("/wecom/callback/acme")),
                             FakeWeCom.add_contact_event(way["state"], "wmEXT1"))
        # WeCom retrying the same add (new nonce) does not count twice.
        await FakeWeCom.post(http, str(gateway.make_url("/wecom/callback/acme")),
                             FakeWeCom.add_contact_event(way["state"], "wmEXT1"))
    rows = await _stats(gateway, tenant)
    assert rows["wechat"]["entries"] == 2 and rows["wechat"]["adds"] == 1


async def test_group_join_reads_the_member_state(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    wecom, _ = fake
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="group", chat_ids=["wrGroup1"], **CALLBACK_SECRETS)
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=tenant.auth)).json()
    wecom.rate_limit = 1  # WeCom says "slow down" once: back off and retry
    hop = await _landing_entry_link(gateway, product["code"], DOUYIN_UA)
    page = await (await gateway.get(hop, headers={"User-Agent": DOUYIN_UA})).text()
    (config_id, way), = wecom.join_ways.items()
    assert f"fake/{config_id}.png" in page and way["chat_id_list"] == ["wrGroup1"]
    async with __import__("aiohttp").ClientSession() as http:
        url = str(gateway.make_url("/wecom/callback/acme"))
        await FakeWeCom.post(http, url, wecom.join_group("wrGroup1", "wmJoin1", way["state"]))
        await FakeWeCom.post(http, url, wecom.join_group("wrGroup1", "wmJoin2", "forged123"))
    rows = await _stats(gateway, tenant)
    assert rows["douyin"]["adds"] == 1
    assert rows["unattributed"]["adds"] == 1
    assert "groupchat_get" in wecom.calls
    # A platform-only state can't name the product: by product, both adds show untraced.
    by_product = await (await gateway.get("/api/stats?by=product", headers=tenant.auth)).json()
    untraced = [r for r in by_product["rows"] if r["product_id"] is None]
    assert untraced and untraced[0]["adds"] == 2 and untraced[0]["title"] is None


async def test_wecom_api_failures_give_a_page_never_a_500(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    wecom, _ = fake
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="contact_way", users=["zhangsan"], **CALLBACK_SECRETS)
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=tenant.auth)).json()
    for knob in ("fail_with", "delay"):
        setattr(wecom, knob, 60011 if knob == "fail_with" else 1.5)
        resp = await gateway.get(f"/e/{product['code']}", headers={"User-Agent": WECHAT_UA})
        assert resp.status == 503, knob
        assert "entry_unavailable" in await resp.text()
        setattr(wecom, knob, None if knob == "fail_with" else 0.0)
    resp = await gateway.get(f"/e/{product['code']}", headers={"User-Agent": WECHAT_UA})
    assert resp.status == 200


#: Answers a proxy or a broken WeCom gave with status 200: none is a way to keep.
GARBAGE_TOKENS = [{"errcode": 0, "access_token": "t-1", "expires_in": "soon"},
                  {"errcode": 0, "access_token": {"token": "t-2"}}, {"errcode": "ok"}]
GARBAGE_ANSWERS = [
    {"errcode": 0}, {"errcode": "busy"}, {"errcode": True}, [1], "<html>502 Bad Gateway</html>",
    {"errcode": 0, "config_id": "cw9", "qr_code": None},
    {"errcode": 0, "config_id": "cw9", "qr_code": "javascript:alert(1)"},
    {"errcode": 0, "config_id": "jw9", "join_way": "jw9"},
    {"errcode": 0, "config_id": "jw9", "join_way": {"qr_code": 5}},
]


async def test_wecom_answering_garbage_gives_a_page_and_keeps_no_way(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An answer with errcode 0 but no config_id or QR code was a KeyError (a 500 on the
    # shopper's page); one with a QR code that is no URL ("None", "5", a javascript: URL)
    # was kept as the platform's way, and shown to every shopper of it from then on.
    wecom, _ = fake
    codes = {}
    for merchant, entry in (("acme", {"kind": "contact_way", "users": ["zhangsan"]}),
                            ("bolt", {"kind": "group", "chat_ids": ["wrOgQhDgAAMYQiS5ol9G7"]})):
        tenant = await add_tenant(gateway, merchant)
        await _entry(gateway, tenant, **entry, **CALLBACK_SECRETS)
        product = await (await gateway.post("/api/products", json=PRODUCT,
                                            headers=tenant.auth)).json()
        codes[merchant] = product["code"]
    for knob, answers in (("token_garbage", GARBAGE_TOKENS), ("garbage", GARBAGE_ANSWERS)):
        for answer in answers:
            setattr(wecom, knob, answer)
            for merchant, code in codes.items():
                resp = await gateway.get(f"/e/{code}", headers={"User-Agent": WECHAT_UA})
                assert resp.status == 503, (merchant, answer)
                assert "entry_unavailable" in await resp.text()
        setattr(wecom, knob, None)
    for merchant, code in codes.items():  # WeCom mended: each merchant's own real way
        resp = await gateway.get(f"/e/{code}", headers={"User-Agent": WECHAT_UA})
        assert resp.status == 200, merchant
        page = await resp.text()
        assert re.search(r"https://wework\.qpic\.cn/fake/(cw|jw)\d+\.png", page), merchant
    assert (len(wecom.contact_ways), len(wecom.join_ways)) == (1, 1)
    said = capsys.readouterr().err
    assert "Traceback" not in said
    # Each merchant's trouble said when it began and when it ended, not at each of the
    # twelve hops that met it.
    logged = [json.loads(line) for line in said.splitlines() if line.startswith("{")]
    for merchant in codes:
        assert [line["event"] for line in logged if line.get("merchant") == merchant
                and line["event"].startswith("entry.way_")] == [
            "entry.way_unavailable", "entry.way_back", "entry.way_created"], merchant


async def test_url_verification(gateway: TestClient[Any, Any]) -> None:
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="acquisition_link", url=ACQUISITION, **CALLBACK_SECRETS)
    params, _ = FakeWeCom.envelope("8217465830185")
    crypto_params = dict(params)
    from gateway.wecom.crypto import WeComCrypto

    crypto = WeComCrypto(CALLBACK_TOKEN, AES_KEY, CORP_ID)
    echostr = crypto.encrypt("8217465830185")
    crypto_params["msg_signature"] = crypto.sign(params["timestamp"], params["nonce"], echostr)
    resp = await gateway.get("/wecom/callback/acme", params={**crypto_params, "echostr": echostr})
    assert resp.status == 200 and await resp.text() == "8217465830185"
    crypto_params["msg_signature"] = "0" * 40
    bad = await gateway.get("/wecom/callback/acme", params={**crypto_params, "echostr": echostr})
    assert bad.status == 403
    unknown = await gateway.get("/wecom/callback/nobody", params={**crypto_params,
                                                                   "echostr": echostr})
    assert unknown.status == 404


async def test_bad_callbacks_record_nothing(gateway: TestClient[Any, Any]) -> None:
    tenant = await add_tenant(gateway, "acme")
    await _entry(gateway, tenant, kind="acquisition_link", url=ACQUISITION, **CALLBACK_SECRETS)
    url = str(gateway.make_url("/wecom/callback/acme"))
    message = FakeWeCom.add_contact_event(None, "wmEXT9")
    params, body = FakeWeCom.envelope(message, nonce="n-1")
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async def post(p: dict[str, str], b: str) -> tuple[int, str]:
            r = await http.post(url, params=p, data=b)
            return r.status, (await r.json())["error"]["code"] if r.status != 200 else "ok"

        assert await post({**params, "msg_signature": "f" * 40}, body) == (403, "bad_signature")
        stale, stale_body = FakeWeCom.envelope(message, timestamp=1_000_000_000)
        assert await post(stale, stale_body) == (403, "stale_timestamp")
        other, other_body = FakeWeCom.envelope(message, corp_id="wwffffffffffffffff")
        assert await post(other, other_body) == (403, "bad_receive_id")
        assert await post(params, "<xml><Encrypt>") == (400, "malformed")
        assert await post(params, "garbage") == (400, "malformed")
        assert await post({}, body) == (400, "bad_request")
        assert (await post(params, body)) == (200, "ok")  # the real one, once
        assert await post(params, body) == (403, "replayed_nonce")
    rows = await _stats(gateway, tenant)
    # Only the one genuine callback counted, and with no state it is unattributed.
    assert sum(r["adds"] for r in rows.values()) == 1
    assert rows["unattributed"]["adds"] == 1


async def test_callbacks_stored_before_a_restart_are_worked_after_it(
    aiohttp_client: Any, tmp_path: Path, fake: tuple[FakeWeCom, TestServer],
) -> None:
    """Answered but not yet worked when the process stopped: the next start does the work."""
    _, server = fake
    settings = make_settings(tmp_path, wecom__api_base=str(server.make_url("/cgi-bin")))
    first = await aiohttp_client(create_app(settings))
    tenant = await add_tenant(first, "acme")
    await _entry(first, tenant, kind="acquisition_link", url=ACQUISITION, **CALLBACK_SECRETS)
    assert first.app is not None
    await first.app[CALLBACKS].close()  # the worker is gone, as in a crash right after 200
    import aiohttp

    async with aiohttp.ClientSession() as http:
        resp = await FakeWeCom.post(http, str(first.make_url("/wecom/callback/acme")),
                                    FakeWeCom.add_contact_event(None, "wmEXT1"))
        assert resp.status == 200
    await first.close()
    second = await aiohttp_client(create_app(settings))
    rows = await _stats(second, tenant)
    assert rows["unattributed"]["adds"] == 1


async def test_app_session_closes_cleanly(aiohttp_client: Any, tmp_path: Path) -> None:
    """Closing the gateway stops its background work (the callback worker, the recorder,
    the link watcher...): none of their tasks outlives it."""
    import asyncio

    app = create_app(make_settings(tmp_path))
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    running = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("linkloop-")}
    assert "linkloop-wecom-callbacks" in running
    await client.close()
    assert isinstance(app, web.Application)
    assert [t.get_name() for t in asyncio.all_tasks()
            if t.get_name().startswith("linkloop-") and not t.done()] == []


# --- after the add: the first chat, lost contacts, and the acquisition link's alerts ------
async def _acquired(client: TestClient[Any, Any], tenant: Tenant, ua: str) -> str:
    """A shopper in ``ua``'s app reaches the acquisition link: its customer_channel."""
    product = await (await client.post("/api/products", json=PRODUCT,
                                       headers=tenant.auth)).json()
    client.session.cookie_jar.clear()
    hop = await _landing_entry_link(client, product["code"], ua)
    resp = await client.get(hop, headers={"User-Agent": ua}, allow_redirects=False)
    assert resp.status == 302
    state: str = parse_qs(urlsplit(resp.headers["Location"]).query)["customer_channel"][0]
    await _settle(client)
    return state


async def test_a_chat_counts_on_the_adds_platform_and_a_lost_contact_too(
    gateway: TestClient[Any, Any], capsys: Any,
) -> None:
    acme, other = await _two_tenants_taking_callbacks(gateway)
    state = await _acquired(gateway, acme, DOUYIN_UA)
    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = str(gateway.make_url("/wecom/callback/acme"))
        chat = FakeWeCom.customer_acquisition_event(
            "customer_start_chat", UserID="zhangsan", ExternalUserID="wmEXT1",
            LinkId="cawcde5a6b7c8d9e0f")
        for message in (FakeWeCom.add_contact_event(state, "wmEXT1"), chat,
                        chat,  # WeCom sends it again: one chat
                        FakeWeCom.customer_acquisition_event(  # someone we never saw add
                            "customer_start_chat", UserID="zhangsan", ExternalUserID="wmX9",
                            LinkId="cawcde5a6b7c8d9e0f"),
                        FakeWeCom.contact_deleted_event("del_follow_user", "wmEXT1")):
            resp = await FakeWeCom.post(http, url, message)
            assert resp.status == 200
    rows = await _stats(gateway, acme)
    assert (rows["douyin"]["adds"], rows["douyin"]["chats"],
            rows["douyin"]["lost_contacts"]) == (1, 1, 1)
    assert rows["douyin"]["chat_rate"] == 1.0
    assert (rows["unattributed"]["chats"], rows["unattributed"]["adds"]) == (1, 0)
    # The chat follows the add to its click's product, too.
    by_product = await (await gateway.get("/api/stats?by=product", headers=acme.auth)).json()
    traced = [r for r in by_product["rows"] if r["product_id"] is not None]
    assert [(r["adds"], r["chats"]) for r in traced] == [(1, 1)]
    assert (await _stats(gateway, other)) == {}
    logs = capsys.readouterr().err
    assert logs.count('"event": "callback.chat"') == 3  # worked each time, counted once


@pytest.mark.parametrize("change", ["balance_low", "balance_exhausted", "quota_expire_soon",
                                    "link_unavailable", "delete_link"])
async def test_acquisition_link_trouble_is_an_alert_for_its_merchant_only(
    aiohttp_client: Any, tmp_path: Path, fake: tuple[FakeWeCom, TestServer], capsys: Any,
    change: str,
) -> None:
    configure_logging("info", "json")
    _, server = fake
    # A plain-http public URL, as on a laptop: the dashboard's cookie is then not Secure.
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, wecom__api_base=str(server.make_url("/cgi-bin")), server__public_url="")))
    acme = await add_tenant(client, "acme")
    other = await add_tenant(client, "other")
    await _entry(client, acme, kind="acquisition_link", url=ACQUISITION, **CALLBACK_SECRETS)
    fields: dict[str, str | int] = (
        {"LinkId": "cawcde5a6b7c8d9e0f"} if change in ("link_unavailable", "delete_link")
        else {"ExpireTime": 1735660800, "ExpireQuotaNum": 25}
        if change == "quota_expire_soon" else {})
    message = FakeWeCom.customer_acquisition_event(change, **fields)
    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = str(client.make_url("/wecom/callback/acme"))
        assert (await FakeWeCom.post(http, url, message)).status == 200
        assert (await FakeWeCom.post(http, url, message)).status == 200  # retried: one alert
    await _settle(client)
    answer = await (await client.get("/api/alerts", headers=acme.marketing_auth)).json()
    (alert,) = answer["alerts"]
    assert alert["kind"] == change and alert["message"]
    assert alert["severity"] == ("warning" if change in ("balance_low", "quota_expire_soon")
                                 else "critical")
    # What WeCom said about the link or the quota, as text; nothing for the balance.
    assert alert["detail"] == {k: str(v) for k, v in fields.items()}
    assert (await (await client.get("/api/alerts", headers=other.auth)).json())["alerts"] == []
    assert (await client.get("/api/alerts")).status == 401
    assert (await client.get("/api/alerts?days=0", headers=acme.auth)).status == 422
    assert capsys.readouterr().err.count(f'"kind": "{change}"') == 2  # logged, each time
    # And on the dashboard, where the merchant's staff look.
    from .test_dashboard import add_user, login

    await add_user(client, "acme", "anna@example.com")
    assert (await login(client, "anna@example.com")).status == 303
    page = await (await client.get("/dashboard")).text()
    assert f'data-kind="{change}"' in page and ALERT_KINDS[change].message in page


# --- the worker's attribution, edge by edge ---------------------------------------------
def _events(client: TestClient[Any, Any], kind: str) -> list[tuple[Any, ...]]:
    """The stored events of a kind: whose, where from (platform, click, product), which day."""
    assert client.app is not None
    conn = client.app[STORE]._rconn  # the test reads what storage holds
    return conn.execute("SELECT merchant_id, platform, click_id, product_id, day FROM events "
                        "WHERE kind = ? ORDER BY merchant_id, day, platform",
                        (kind,)).fetchall()


async def _worked(client: TestClient[Any, Any], callbacks: Any) -> None:
    """Post each (merchant, message) as WeCom would, in order, each worked before the next
    (WeCom's own order: an add before its chat and its loss)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for merchant, message in callbacks:
            resp = await FakeWeCom.post(
                http, str(client.make_url(f"/wecom/callback/{merchant}")), message)
            assert resp.status == 200
            await _settle(client)


def _created(message: str, at: int | None) -> str:
    """The message with WeCom's CreateTime set to ``at``, or without one (None)."""
    return re.sub(r"<CreateTime>\d+</CreateTime>",
                  "" if at is None else f"<CreateTime>{at}</CreateTime>", message)


def _day(ts: float) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo("Asia/Shanghai")).date().isoformat()


async def test_a_chat_and_a_loss_carry_the_adds_click_and_product_on_their_own_days(
    gateway: TestClient[Any, Any],
) -> None:
    """A chat or a loss is stored with the add's platform, click and product (what a replay
    that meets no click still counts by), on the day WeCom says it happened; one without a
    CreateTime counts on the day it is worked. Each merchant's contacts are its own."""
    import time

    acme, _ = await _two_tenants_taking_callbacks(gateway)
    state = await _acquired(gateway, acme, DOUYIN_UA)
    now = int(time.time())
    added, lost = now - 3 * 86400, now - 2 * 86400  # WeCom's callbacks came late
    import structlog

    with structlog.testing.capture_logs() as logs:
        await _worked(gateway, (
                ("acme", _created(FakeWeCom.add_contact_event(state, "wmEXT1"), added)),
                ("acme", _created(FakeWeCom.customer_acquisition_event(
                    "customer_start_chat", UserID="zhangsan", ExternalUserID="wmEXT1",
                    LinkId="cawcde5a6b7c8d9e0f"), added)),
                ("acme", _created(FakeWeCom.contact_deleted_event(
                    "del_external_contact", "wmEXT1"), lost)),
                # The same ids at another merchant: its own contact, never acme's.
                ("other", _created(FakeWeCom.add_contact_event(None, "wmEXT1"), added)),
                ("other", _created(FakeWeCom.contact_deleted_event(
                    "del_follow_user", "wmEXT1"), lost)),
                # No CreateTime: counted on the day it is worked. A chat from someone
                # never seen to add, and an add.
                ("acme", _created(FakeWeCom.customer_acquisition_event(
                    "customer_start_chat", UserID="lisi", ExternalUserID="wmX9"), None)),
                ("other", _created(FakeWeCom.add_contact_event(None, "wmEXT2"), None))))
    assert [(e["event"], e["merchant"], e["attributed"], e["platform"]) for e in logs
            if e["event"] in ("callback.add", "callback.chat", "callback.lost")] == [
        ("callback.add", "acme", True, "douyin"),
        ("callback.chat", "acme", True, "douyin"), ("callback.lost", "acme", True, "douyin"),
        ("callback.add", "other", False, "unattributed"),
        ("callback.lost", "other", True, "unattributed"),
        ("callback.chat", "acme", False, "unattributed"),
        ("callback.add", "other", False, "unattributed")]
    assert gateway.app is not None
    (click_id, product_id), = gateway.app[STORE]._rconn.execute(
        "SELECT id, product_id FROM clicks WHERE merchant_id = 'acme'").fetchall()
    assert _events(gateway, "add") == [
        ("acme", "douyin", click_id, product_id, _day(added)),
        ("other", "unattributed", None, None, _day(added)),
        ("other", "unattributed", None, None, _day(time.time()))]
    # The contact row remembers when WeCom says it was added.
    assert gateway.app[STORE]._rconn.execute(
        "SELECT merchant_id, external_userid, added_at FROM wecom_contacts WHERE added_at < ? "
        "ORDER BY merchant_id", (now,)).fetchall() == [("acme", "wmEXT1", added),
                                                      ("other", "wmEXT1", added)]
    assert _events(gateway, "chat") == [
        ("acme", "douyin", click_id, product_id, _day(added)),
        ("acme", "unattributed", None, None, _day(time.time()))]
    assert _events(gateway, "lost") == [
        ("acme", "douyin", click_id, product_id, _day(lost)),
        ("other", "unattributed", None, None, _day(lost))]


async def test_a_group_join_counts_only_the_members_it_names(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    """WeCom's MemChangeList says who joined: a customer already in the group is not
    counted again by someone else's join. A join that lists nobody (no MemChangeList, or
    one that is not a list of members) counts every customer not counted yet, and a
    member's state that is not text (WeCom's JSON is anyone's) counts unattributed."""
    wecom, _ = fake
    acme = await add_tenant(gateway, "acme")
    other = await add_tenant(gateway, "other")
    for tenant in (acme, other):
        await _entry(gateway, tenant, kind="group", chat_ids=["wrGroup1"], **CALLBACK_SECRETS)
    product = await (await gateway.post("/api/products", json=PRODUCT,
                                        headers=acme.auth)).json()
    hop = await _landing_entry_link(gateway, product["code"], DOUYIN_UA)
    await gateway.get(hop, headers={"User-Agent": DOUYIN_UA})
    (_, way), = wecom.join_ways.items()
    # A customer who was in the group before the join way (a number where a state goes).
    import time

    joined = int(time.time()) - 3 * 86400
    wecom.groups["wrGroup1"] = [{"userid": "wmOld", "type": 2, "join_scene": 1,
                                 "join_time": joined, "state": 12345},
                                {"type": 2, "join_scene": 1, "join_time": joined}]  # no id
    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = str(gateway.make_url("/wecom/callback/acme"))
        await FakeWeCom.post(http, url, wecom.join_group("wrGroup1", "wmNew1", way["state"]))
        rows = await _stats(gateway, acme)
        assert {p: r["adds"] for p, r in rows.items()} == {"douyin": 1}
        # No MemChangeList: wmNew2 and, not counted yet, wmOld.
        no_list = re.sub(r"<MemChangeCnt>.*</MemChangeList>", "",
                         wecom.join_group("wrGroup1", "wmNew2", way["state"]))
        assert "MemChangeList" not in no_list
        await FakeWeCom.post(http, url, no_list)
        rows = await _stats(gateway, acme)
        assert {p: r["adds"] for p, r in rows.items()} == {"douyin": 2, "unattributed": 1}
        # A MemChangeList of text, not items: read as no list.
        text_list = wecom.join_group("wrGroup1", "wmNew3", way["state"]).replace(
            "<Item>wmNew3</Item>", "wmNew3")
        await FakeWeCom.post(http, url, text_list)
    rows = await _stats(gateway, acme)
    assert {p: r["adds"] for p, r in rows.items()} == {"douyin": 3, "unattributed": 1}
    assert await _stats(gateway, other) == {}
    # wmOld's add counts on the day WeCom says it joined.
    assert [(p, day) for _, p, _, _, day in _events(gateway, "add")
            if p == "unattributed"] == [("unattributed", _day(joined))]


async def test_a_group_join_that_cannot_be_read_is_logged_and_counts_nothing(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    """A join whose group can't be asked about (no ChatId, or a merchant with callbacks
    but no app secret to call WeCom with) is a warning naming the merchant, not a call to
    WeCom and not an add, and it is not retried."""
    wecom, _ = fake
    acme = await add_tenant(gateway, "acme")
    other = await add_tenant(gateway, "other")
    await _entry(gateway, acme, kind="group", chat_ids=["wrGroup1"], **CALLBACK_SECRETS)
    await _entry(gateway, other, kind="acquisition_link", url=ACQUISITION,
                 **{k: v for k, v in CALLBACK_SECRETS.items() if k != "secret"})
    no_chat = re.sub(r"<ChatId>.*</ChatId>", "", wecom.join_group("wrGroup1", "wmA", None))
    assert "ChatId" not in no_chat
    import aiohttp
    import structlog

    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            for merchant, message in (("acme", no_chat),
                                      ("other", wecom.join_group("wrGroup1", "wmB", None))):
                resp = await FakeWeCom.post(
                    http, str(gateway.make_url(f"/wecom/callback/{merchant}")), message)
                assert resp.status == 200
        assert await _stats(gateway, acme) == {} and await _stats(gateway, other) == {}
    assert "groupchat_get" not in wecom.calls
    assert [(e["event"], e.get("merchant")) for e in logs if e["log_level"] != "info"] == [
        ("callback.group_join_unreadable", "acme"),
        ("callback.group_join_unreadable", "other")]


async def test_alerts_keep_each_links_trouble_and_wecoms_time(
    gateway: TestClient[Any, Any],
) -> None:
    """Two links unavailable at the same second are two alerts (one per link, however often
    WeCom retries each); an alert shows when WeCom says it happened, or when it was worked
    if WeCom gave no time; each is logged with its merchant, kind, link and whether new."""
    import time
    from datetime import datetime

    import structlog

    acme, other = await _two_tenants_taking_callbacks(gateway)
    at = int(time.time()) - 3 * 86400
    unavailable = [_created(FakeWeCom.customer_acquisition_event(
        "link_unavailable", LinkId=link), at) for link in ("cawLinkOne", "cawLinkTwo")]
    with structlog.testing.capture_logs() as logs:
        await _worked(gateway, (
            ("acme", unavailable[0]), ("acme", unavailable[1]), ("acme", unavailable[0]),
            ("other", _created(FakeWeCom.customer_acquisition_event("balance_low"), None)),
            # Neither a 获客助手 change we know, nor a 获客助手 event: no alert.
            ("acme", FakeWeCom.customer_acquisition_event("quota_increased")),
            ("acme", FakeWeCom._event("change_external_chat", "balance_low", {}))))

    async def alerts(tenant: Tenant) -> list[tuple[Any, ...]]:
        body = await (await gateway.get("/api/alerts", headers=tenant.auth)).json()
        return sorted((a["kind"], a["detail"].get("LinkId"),
                       datetime.fromisoformat(a["created_at"]).timestamp())
                      for a in body["alerts"])

    assert await alerts(acme) == [("link_unavailable", "cawLinkOne", at),
                                  ("link_unavailable", "cawLinkTwo", at)]
    (kind, link, created), = await alerts(other)
    assert (kind, link) == ("balance_low", None) and at < created <= time.time()
    assert [(e["event"], e["merchant"], e["kind"], e["new"], e.get("LinkId")) for e in logs
            if e["log_level"] == "warning"] == [
        ("callback.alert", "acme", "link_unavailable", True, "cawLinkOne"),
        ("callback.alert", "acme", "link_unavailable", True, "cawLinkTwo"),
        ("callback.alert", "acme", "link_unavailable", False, "cawLinkOne"),
        ("callback.alert", "other", "balance_low", True, None)]


async def test_an_unreadable_stored_callback_is_logged_and_let_go(
    gateway: TestClient[Any, Any],
) -> None:
    """A stored message the worker cannot parse (stored by an older version, or damaged)
    is a warning naming the inbox item, counts nothing, and is not tried again; the next
    one is worked."""
    import structlog

    acme, other = await _two_tenants_taking_callbacks(gateway)
    assert gateway.app is not None
    store = gateway.app[STORE]
    await gateway.app[CALLBACKS].close()  # the worker stopped: the test drains by hand
    assert await store.accept_callback("acme", "n-broken", "<xml><Event>")
    assert await store.accept_callback("other", "n-fine",
                                       FakeWeCom.add_contact_event(None, "wmEXT1"))
    (broken, fine) = await store.pending_callbacks(10)
    with structlog.testing.capture_logs() as logs:
        await _settle(gateway)
    assert [(e["event"], e.get("item")) for e in logs if e["log_level"] == "warning"] == [
        ("callback.malformed", broken.id)]
    assert fine.merchant_id == "other"
    assert await _stats(gateway, acme) == {}
    assert {p: r["adds"] for p, r in (await _stats(gateway, other)).items()} == {
        "unattributed": 1}


async def test_an_event_without_its_member_or_customer_is_tied_to_no_contact(
    gateway: TestClient[Any, Any],
) -> None:
    """A contact is a member and a customer: an add naming only one of them still counts
    where its state says, but keeps no contact, so a loss naming only one counts
    unattributed, not under some contact made up from the missing id."""
    acme, other = await _two_tenants_taking_callbacks(gateway)
    state = await _acquired(gateway, acme, DOUYIN_UA)

    def without(message: str, field: str) -> str:
        cut = re.sub(rf"<{field}>.*?</{field}>", "", message)
        assert f"<{field}>" not in cut
        return cut

    callbacks = []
    for field in ("UserID", "ExternalUserID"):
        callbacks += [
            ("acme", without(FakeWeCom.add_contact_event(state, "wmEXT1"), field)),
            ("acme", without(FakeWeCom.contact_deleted_event("del_follow_user", "wmEXT1"),
                             field))]
    await _worked(gateway, callbacks)
    assert gateway.app is not None
    assert gateway.app[STORE]._rconn.execute(
        "SELECT COUNT(*) FROM wecom_contacts").fetchone()[0] == 0
    rows = await _stats(gateway, acme)
    assert {p: (r["adds"], r["lost_contacts"]) for p, r in rows.items()} == {
        "douyin": (2, 0), "unattributed": (0, 2)}
    assert await _stats(gateway, other) == {}


async def test_each_member_a_customer_adds_is_an_add_and_a_half_add_counts_too(
    gateway: TestClient[Any, Any],
) -> None:
    """WeCom's add_half_external_contact (the customer added a member who needs no
    verification) is an add like add_external_contact; one customer adding two members
    is two adds, each kept once however often WeCom retries it; an edit is nothing."""
    acme, other = await _two_tenants_taking_callbacks(gateway)
    state = await _acquired(gateway, acme, DOUYIN_UA)
    half = FakeWeCom.add_contact_event(state, "wmEXT1", user="lisi").replace(
        "add_external_contact", "add_half_external_contact")
    assert "add_half_external_contact" in half
    # A member editing the customer's remark is neither an add nor a loss.
    edited = FakeWeCom._event("change_external_contact", "edit_external_contact",
                              {"UserID": "zhangsan", "ExternalUserID": "wmEXT1"})
    await _worked(gateway, [("acme", FakeWeCom.add_contact_event(state, "wmEXT1")),
                            ("acme", half), ("acme", half), ("acme", edited)])
    rows = await _stats(gateway, acme)
    assert {p: (r["adds"], r["lost_contacts"]) for p, r in rows.items()} == {
        "douyin": (2, 0)}
    assert await _stats(gateway, other) == {}


async def test_group_changes_that_are_no_join_are_ignored_and_logged(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    """A member leaving, a group made, or another event that says add_member: no call to
    WeCom, no add; each logged as ignored with its merchant, event and change."""
    import structlog

    wecom, _ = fake
    acme = await add_tenant(gateway, "acme")
    other = await add_tenant(gateway, "other")
    for tenant in (acme, other):
        await _entry(gateway, tenant, kind="group", chat_ids=["wrGroup1"], **CALLBACK_SECRETS)
    wecom.groups["wrGroup1"] = [{"userid": "wmA", "type": 2, "join_time": 1, "join_scene": 3}]
    left = wecom.join_group("wrGroup1", "wmB", None).replace("add_member", "del_member")
    made = FakeWeCom._event("change_external_chat", "create", {"ChatId": "wrGroup1"})
    other_event = FakeWeCom._event("change_external_contact", "update",
                                   {"ChatId": "wrGroup1", "UpdateDetail": "add_member"})
    with structlog.testing.capture_logs() as logs:
        await _worked(gateway, [("acme", left), ("acme", made), ("acme", other_event)])
    assert "groupchat_get" not in wecom.calls
    assert await _stats(gateway, acme) == {} and await _stats(gateway, other) == {}
    assert [(e["merchant"], e["msg_event"], e["change"]) for e in logs
            if e["event"] == "callback.ignored"] == [
        ("acme", "change_external_chat", "update"), ("acme", "change_external_chat", "create"),
        ("acme", "change_external_contact", "update")]


async def test_a_callback_wecom_refuses_is_tried_five_times_then_let_go(
    gateway: TestClient[Any, Any], fake: tuple[FakeWeCom, TestServer],
) -> None:
    """A join WeCom won't answer about is kept and tried again, each try a warning with
    its count, and let go (an error, nothing counted) after the fifth; the callbacks after
    it in the same batch are worked meanwhile, and one WeCom refuses only once counts."""
    import structlog

    wecom, _ = fake
    acme = await add_tenant(gateway, "acme")
    other = await add_tenant(gateway, "other")
    for tenant in (acme, other):
        await _entry(gateway, tenant, kind="group", chat_ids=["wrGroup1"], **CALLBACK_SECRETS)
    assert gateway.app is not None
    store, worker = gateway.app[STORE], gateway.app[CALLBACKS]
    await worker.close()  # the worker stopped: the test drains by hand, try by try
    assert await store.accept_callback("other", "n-join",
                                       wecom.join_group("wrGroup1", "wmB", None))
    assert await store.accept_callback("acme", "n-add",
                                       FakeWeCom.add_contact_event(None, "wmEXT1"))
    (join, add) = await store.pending_callbacks(10)
    wecom.fail_with = 60011  # no privilege: every call to WeCom refused
    with structlog.testing.capture_logs() as logs:
        assert await worker.drain()  # something is left to try again
        assert [item.id for item in await store.pending_callbacks(10)] == [join.id]
        for _ in range(3):
            assert await worker.drain()
        assert await store.pending_callbacks(10)
        assert not await worker.drain()  # the fifth try: let go
        assert not await store.pending_callbacks(10)
    assert wecom.calls.count("groupchat_get") == 5
    tries = [(e["event"], e["item"], e["attempts"]) for e in logs
             if e["event"] in ("callback.retry", "callback.abandoned")]
    assert tries == [*(("callback.retry", join.id, n) for n in range(1, 5)),
                     ("callback.abandoned", join.id, 5)]
    # Each names WeCom's answer (the fake's errmsg), so a log reader sees why.
    assert all("refused" in e["error"] for e in logs if e["event"] in ("callback.retry",
                                                                        "callback.abandoned"))
    assert add.merchant_id == "acme"
    assert {p: r["adds"] for p, r in (await _stats(gateway, acme)).items()} == {
        "unattributed": 1}
    assert await _stats(gateway, other) == {}
    # Refused once, then answered: the second try counts the join.
    assert await store.accept_callback("other", "n-join-2",
                                       wecom.join_group("wrGroup1", "wmC", None))
    with structlog.testing.capture_logs() as logs:
        assert await worker.drain()
        wecom.fail_with = None
        assert not await worker.drain()
    assert [(e["event"], e["attempts"]) for e in logs if "attempts" in e] == [
        ("callback.retry", 1)]
    assert {p: r["adds"] for p, r in (await _stats(gateway, other)).items()} == {
        "unattributed": 1}


async def test_a_full_page_of_callbacks_is_followed_at_once_by_the_next(
    gateway: TestClient[Any, Any],
) -> None:
    """The worker reads 100 stored callbacks at a time; after a full page it says more may
    be waiting (it comes back at once instead of sleeping), after the last page it doesn't."""
    acme, other = await _two_tenants_taking_callbacks(gateway)
    assert gateway.app is not None
    store, worker = gateway.app[STORE], gateway.app[CALLBACKS]
    await worker.close()
    for n in range(101):
        assert await store.accept_callback(
            ("acme", "other")[n % 2], f"n-{n}",
            FakeWeCom.add_contact_event(None, f"wmEXT{n}"))
    assert await worker.drain()
    assert len(await store.pending_callbacks(200)) == 1
    assert not await worker.drain()
    assert not await store.pending_callbacks(200)
    assert {p: r["adds"] for p, r in (await _stats(gateway, acme)).items()} == {
        "unattributed": 51}
    assert {p: r["adds"] for p, r in (await _stats(gateway, other)).items()} == {
        "unattributed": 50}


async def test_callbacks_are_worked_in_the_background_without_being_asked(
    gateway: TestClient[Any, Any],
) -> None:
    """The answer to WeCom wakes the worker: the add shows in the stats with no one
    draining by hand, again for a second callback after the worker went back to sleep,
    each at its own merchant."""
    acme, other = await _two_tenants_taking_callbacks(gateway)

    async def adds(tenant: Tenant) -> dict[str, int]:
        body = await (await gateway.get("/api/stats?by=platform", headers=tenant.auth)).json()
        return {row["platform"]: row["adds"] for row in body["rows"]}

    import aiohttp

    async with aiohttp.ClientSession() as http:
        for merchant, tenant in (("acme", acme), ("other", other)):
            resp = await FakeWeCom.post(http, str(gateway.make_url(f"/wecom/callback/{merchant}")),
                                        FakeWeCom.add_contact_event(None, f"wm{merchant}"))
            assert resp.status == 200

            async def counted(tenant: Tenant = tenant) -> bool:
                return await adds(tenant) == {"unattributed": 1}

            await until(counted, what=f"{merchant}'s add counted by the running worker")
    assert await adds(acme) == await adds(other) == {"unattributed": 1}


async def test_a_callback_stored_with_no_wake_is_worked_at_the_next_look(
    gateway: TestClient[Any, Any],
) -> None:
    """A callback another gateway stored (and crashed before working) wakes no worker
    here: the running worker still finds it when its wait for a wake runs out (5 s),
    and goes on waiting and working after that."""
    acme, other = await _two_tenants_taking_callbacks(gateway)
    assert gateway.app is not None
    store = gateway.app[STORE]

    async def adds(tenant: Tenant) -> dict[str, int]:
        body = await (await gateway.get("/api/stats?by=platform", headers=tenant.auth)).json()
        return {row["platform"]: row["adds"] for row in body["rows"]}

    for merchant, tenant in (("acme", acme), ("other", other)):
        assert await store.accept_callback(merchant, f"n-{merchant}",
                                           FakeWeCom.add_contact_event(None, f"wm{merchant}"))

        async def counted(tenant: Tenant = tenant) -> bool:
            return await adds(tenant) == {"unattributed": 1}

        await until(counted, what=f"{merchant}'s add found by the worker's own look")
    assert await adds(acme) == await adds(other) == {"unattributed": 1}
