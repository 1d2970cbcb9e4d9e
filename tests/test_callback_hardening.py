"""The WeCom callback under attack: hostile XML, odd queries, replays, clock edges.

Over loopback against the gateway in this process, and as a real ``linkloop serve`` process
where the point is what a separate server does (its CPU under attack, its restart, its log).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import signal
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CALLBACKS, RECORDER, STORE
from gateway.wecom.callback import MAX_CALLBACK_BODY, timestamp_fresh
from gateway.wecom.crypto import WeComCrypto
from gateway.wecom.message import ENVELOPE_MAX_MARKUP

from .conftest import TAOBAO_UA, Tenant, add_tenant, make_settings
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .test_cli import run, serving
from .test_hostile_input import _answer_of
from .wait import DEADLINE

CALLBACK_SECRETS = {"corp_id": CORP_ID, "secret": SECRET, "callback_token": CALLBACK_TOKEN,
                    "encoding_aes_key": AES_KEY}
ENTRY = {"kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f",
         **CALLBACK_SECRETS}
SKEW = 300  # wecom.callback_max_skew_seconds, its default



def _laughs(base: str, fan: int, depth: int) -> str:
    """Billion laughs: entity ``e{depth}`` is ``fan`` copies of the one below, down to
    ``base``; a few hundred bytes that unfold to ``fan ** depth`` copies of ``base``."""
    entities = f'<!ENTITY e0 "{base}">' + "".join(
        f'<!ENTITY e{i + 1} "{f"&e{i};" * fan}">' for i in range(depth))
    return (f'<?xml version="1.0"?><!DOCTYPE xml [{entities}]>'
            f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>&e{depth};</Encrypt></xml>")


# Entity expansion, each under a kilobyte. Unhardened, the first three cost ~0.2 to ~0.8 s of
# CPU each before expat's own amplification limit stops them (an element in the entity
# is the dearest); one entity referenced many times (quadratic blowup) and a parameter
# entity pulling in a file are refused the same way.
BILLION_LAUGHS = (_laughs("a", 10, 9), _laughs("a", 2, 30), _laughs("<a/>", 10, 8))
QUADRATIC = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY q "' + "q" * 400 + '">]><xml><Encrypt>'
             + "&q;" * 150 + "</Encrypt></xml>")
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % x SYSTEM "file:///etc/passwd">%x;]>'
            "<xml><Encrypt>x</Encrypt></xml>")
HOSTILE = {"billion_laughs": BILLION_LAUGHS[0], "billion_laughs_deep": BILLION_LAUGHS[1],
           "billion_laughs_elements": BILLION_LAUGHS[2], "quadratic": QUADRATIC,
           "external": EXTERNAL}


def _signed(encrypt: str, *, timestamp: str | None = None,
            nonce: str | None = None) -> dict[str, str]:
    """A query WeCom would send for ``encrypt``, signed with the merchant's token."""
    ts = timestamp if timestamp is not None else str(int(time.time()))
    nonce = nonce if nonce is not None else secrets.token_hex(8)
    crypto = WeComCrypto(CALLBACK_TOKEN, AES_KEY, CORP_ID)
    return {"msg_signature": crypto.sign(ts, nonce, encrypt), "timestamp": ts, "nonce": nonce}


def _envelope(encrypt: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID>1000002</AgentID></xml>")


def _encrypt(message: str) -> str:
    return WeComCrypto(CALLBACK_TOKEN, AES_KEY, CORP_ID).encrypt(message)


def _unsigned_hostile(body: str) -> tuple[dict[str, str], str]:
    """A fresh query with a made-up signature: what anyone on the internet can send."""
    return ({"msg_signature": secrets.token_hex(20), "timestamp": str(int(time.time())),
             "nonce": secrets.token_hex(8)}, body)


# --- in this process --------------------------------------------------------------------
@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(tmp_path)))
    return client


async def _configured(client: TestClient[Any, Any]) -> tuple[Tenant, Tenant]:
    """Two merchants, both with callbacks set up; the tests attack the first."""
    tenants = (await add_tenant(client, "acme"), await add_tenant(client, "beta"))
    for tenant in tenants:
        resp = await client.put("/api/entry", json=ENTRY, headers=tenant.auth)
        assert resp.status == 200, await resp.text()
    return tenants


async def _post(client: TestClient[Any, Any], params: dict[str, str], body: str | bytes,
                merchant: str = "acme") -> tuple[int, str]:
    resp = await client.post(f"/wecom/callback/{merchant}", params=params, data=body,
                             headers={"Content-Type": "text/xml"})
    if resp.status == 200:
        return 200, await resp.text()
    return resp.status, (await resp.json())["error"]["code"]


async def _adds_and_inbox(client: TestClient[Any, Any], *tenants: Tenant) -> tuple[int, int]:
    """The adds every merchant's stats show, and the callbacks storage took."""
    assert client.app is not None
    await client.app[CALLBACKS].drain()
    await client.app[RECORDER].flush()
    adds = 0
    for tenant in tenants:
        body = await (await client.get("/api/stats?by=platform", headers=tenant.auth)).json()
        adds += sum(row["adds"] for row in body["rows"])
    inbox = client.app[STORE]._rconn.execute("SELECT COUNT(*) FROM wecom_inbox").fetchone()[0]
    return adds, inbox


async def test_a_dtd_is_refused_even_when_everything_else_is_genuine(
    gateway: TestClient[Any, Any],
) -> None:
    """Entities are refused as such, not only when they blow up: a correctly signed
    envelope whose Encrypt comes from an entity, or a signed message declaring one."""
    tenants = await _configured(gateway)
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    outer = (f'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "{encrypt}">]>'
             f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>&e;</Encrypt></xml>")
    assert await _post(gateway, _signed(encrypt), outer) == (400, "malformed")

    inner = FakeWeCom.add_contact_event("&s;", "wmEXT2").replace(
        "<xml>", '<!DOCTYPE xml [<!ENTITY s "not-a-state">]><xml>', 1).replace(
        "<![CDATA[&s;]]>", "&s;")
    inner_encrypt = _encrypt(inner)
    assert await _post(gateway, _signed(inner_encrypt), _envelope(inner_encrypt)) == (
        400, "malformed")
    # Refused means nothing stored and nothing counted, for either merchant.
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)
    # The same event without the DTD is taken: the refusal was the DTD's.
    assert await _post(gateway, _signed(encrypt), _envelope(encrypt)) == (200, "success")
    assert await _adds_and_inbox(gateway, *tenants) == (1, 1)


@pytest.mark.parametrize("kind", HOSTILE)
async def test_entity_expansion_bodies_are_refused(gateway: TestClient[Any, Any],
                                                   kind: str) -> None:
    tenants = await _configured(gateway)
    assert len(HOSTILE[kind]) < 1024
    with structlog.testing.capture_logs() as logs:
        assert await _post(gateway, *_unsigned_hostile(HOSTILE[kind])) == (400, "malformed")
    # Refused at its <!DOCTYPE, before any entity is expanded (or, declaring more entities
    # than an envelope holds markup, before it is parsed at all): a parser that expanded
    # them until expat's own limit stopped it (a fraction of a second of CPU each) says
    # "malformed" instead.
    expected = ("too_much_markup" if HOSTILE[kind].count("<") > ENVELOPE_MAX_MARKUP
                else "xml_forbidden")
    assert [e.get("reason") for e in logs if e["event"] == "callback.refused"] == [expected]
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


def _marked_up(extra: int, *, nested: bool) -> str:
    """An unsigned envelope with ``extra`` more ``<``: elements nested or side by side,
    well-formed XML that only a parser can tell is no envelope."""
    levels, odd = divmod(extra, 2) if nested else (0, extra)
    padding = "<a>" * levels + "<b/>" * odd + "</a>" * levels
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>{padding}"
            "<Encrypt><![CDATA[AAAA]]></Encrypt></xml>")


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "siblings"])
async def test_an_envelope_with_more_markup_than_wecoms_is_refused_before_parsing(
        gateway: TestClient[Any, Any], nested: bool) -> None:
    # Anyone can post one unsigned, and its signature can only be checked once it is
    # parsed: thousands of elements would cost the parser milliseconds of the event loop
    # each (bench/attack.py), so the markup is counted first.
    tenants = await _configured(gateway)
    base = _marked_up(0, nested=nested).count("<")
    at_most = _marked_up(ENVELOPE_MAX_MARKUP - base, nested=nested)
    assert at_most.count("<") == ENVELOPE_MAX_MARKUP
    heavy = _marked_up(16000, nested=nested)
    assert len(heavy.encode()) < MAX_CALLBACK_BODY
    with structlog.testing.capture_logs() as logs:
        # As much markup as an envelope may hold: parsed, and refused for its signature.
        assert await _post(gateway, *_unsigned_hostile(at_most)) == (403, "bad_signature")
        for body in (_marked_up(ENVELOPE_MAX_MARKUP - base + 1, nested=nested), heavy):
            assert await _post(gateway, *_unsigned_hostile(body)) == (400, "malformed")
    assert [e.get("reason") for e in logs if e["event"] == "callback.refused"] == [
        "bad_signature", "too_much_markup", "too_much_markup"]
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


@pytest.mark.parametrize(("field", "value"), [
    ("timestamp", "+{now}"),
    ("timestamp", " {now}"),
    ("timestamp", "{now_arabic}"),  # int() reads other scripts' digits; WeCom sends ASCII
    ("timestamp", "{now}.0"),
    ("nonce", "a b"),
    ("nonce", "<x>"),
    ("nonce", "é1"),
    ("nonce", "n" * 65),
    ("msg_signature", "short"),
])
async def test_a_query_off_wecoms_shape_is_refused_even_if_signed(
    gateway: TestClient[Any, Any], field: str, value: str,
) -> None:
    """WeCom's timestamps are ASCII digits, its nonces short and plain: anything else is a
    400 before the body is looked at, however well it is signed."""
    tenants = await _configured(gateway)
    now = str(int(time.time()))
    value = value.format(now=now, now_arabic="".join(chr(0x660 + int(d)) for d in now))
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    query = {"timestamp": now, "nonce": "n-1", field: value}
    params = _signed(encrypt, timestamp=query["timestamp"], nonce=query["nonce"])
    if field == "msg_signature":
        params["msg_signature"] = value
    assert await _post(gateway, params, _envelope(encrypt)) == (400, "bad_request")
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


async def test_the_body_cap_is_exact_and_read_before_parsing(
    gateway: TestClient[Any, Any],
) -> None:
    tenants = await _configured(gateway)
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    genuine = _envelope(encrypt)
    at_cap = genuine.replace("</xml>", " " * (MAX_CALLBACK_BODY - len(genuine)) + "</xml>")
    assert len(at_cap.encode()) == MAX_CALLBACK_BODY
    over = at_cap.replace("</xml>", " </xml>")
    # Over the cap, declared or streamed without a length: 413, whatever the body holds.
    assert await _post(gateway, _signed(encrypt), over) == (413, "body_too_large")

    async def streamed() -> Any:
        for start in range(0, len(over), 4096):
            yield over[start:start + 4096].encode()

    assert await _post(gateway, _signed(encrypt), streamed()) == (413, "body_too_large")
    hostile = BILLION_LAUGHS[0] + " " * MAX_CALLBACK_BODY
    assert await _post(gateway, *_unsigned_hostile(hostile)) == (413, "body_too_large")
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)
    # At the cap, a genuine callback is taken, at once or arriving in pieces.
    assert await _post(gateway, _signed(encrypt), at_cap) == (200, "success")

    async def trickled() -> Any:
        for start in range(0, len(at_cap), 4096):
            yield at_cap[start:start + 4096].encode()
            await asyncio.sleep(0.005)  # a slow network: the server reads what has come

    assert await _post(gateway, _signed(encrypt), trickled()) == (200, "success")
    assert await _adds_and_inbox(gateway, *tenants) == (1, 2)


@pytest.mark.parametrize(("offset", "fresh"), [
    (-301, False), (-300, True), (-299, True), (0, True), (299, True), (300, True),
    (301, False),
])
def test_timestamp_freshness_at_its_edges(offset: int, fresh: bool) -> None:
    """Within the window either way, to the second, and not a second past it."""
    now = 1_750_000_000.0
    assert timestamp_fresh(str(int(now) + offset), now, SKEW) is fresh
    # A fraction of a second later, the timestamp 300 s old is stale; 300 s ahead is not.
    assert timestamp_fresh(str(int(now) + offset), now + 0.5, SKEW) is (
        fresh and offset != -300)


@pytest.mark.parametrize("timestamp", ["+{now}", " {now}", "{now_arabic}", "{now}.0", ""])
def test_only_ascii_digits_are_a_fresh_timestamp(timestamp: str) -> None:
    """Not WeCom's form, so never fresh, even where ``int()`` would read ``now`` in it."""
    now = 1_750_000_000
    text = timestamp.format(now=now, now_arabic="".join(chr(0x660 + int(d)) for d in str(now)))
    assert timestamp_fresh(text, float(now), SKEW) is False


async def test_an_envelope_without_encrypt_is_refused_as_ciphertext(
    gateway: TestClient[Any, Any],
) -> None:
    """No Encrypt element reads as an empty one, whose signature may well be right: it is
    refused for what it holds (no ciphertext), not read as some other text."""
    tenants = await _configured(gateway)
    body = f"<xml><ToUserName>{CORP_ID}</ToUserName><AgentID>1000002</AgentID></xml>"
    assert await _post(gateway, _signed(""), body) == (403, "bad_ciphertext")
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


async def test_callback_timestamps_299_seconds_off_pass_and_301_fail_both_ways(
    gateway: TestClient[Any, Any],
) -> None:
    """Over HTTP, the gateway's own clock. Whole seconds are rounded so the request's own
    travel time (well under a second) never moves a case across the edge."""
    tenants = await _configured(gateway)
    cases = [(-299, math.ceil, 200), (299, math.floor, 200),
             (-301, math.floor, 403), (301, math.ceil, 403)]
    for user, (offset, rounding, status) in enumerate(cases):
        encrypt = _encrypt(FakeWeCom.add_contact_event(None, f"wmEXT{user}"))
        timestamp = str(int(rounding(time.time())) + offset)
        got = await _post(gateway, _signed(encrypt, timestamp=timestamp), _envelope(encrypt))
        assert got == ((200, "success") if status == 200 else (403, "stale_timestamp")), offset
    assert await _adds_and_inbox(gateway, *tenants) == (2, 2)


@pytest.mark.parametrize("missing", ["msg_signature", "timestamp", "nonce"])
async def test_a_query_missing_any_of_its_three_fields_is_refused(
    gateway: TestClient[Any, Any], missing: str,
) -> None:
    """Each field is required on its own: a signed callback lacking one is a 400, not a
    server error, and no default stands in for it."""
    tenants = await _configured(gateway)
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    params = _signed(encrypt)
    del params[missing]
    assert await _post(gateway, params, _envelope(encrypt)) == (400, "bad_request")
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


async def test_each_refusal_is_answered_and_logged_with_what_failed(
    gateway: TestClient[Any, Any],
) -> None:
    """What a sender and an operator see of each refusal: the status, the code, a message
    naming the check (its exact words are free), and for the checks past the cheap ones a
    ``callback.refused`` warning whose ``reason`` an operator can count."""
    tenants = await _configured(gateway)

    async def refused(params: dict[str, str], body: str, merchant: str = "acme",
                      ) -> tuple[int, str, str]:
        resp = await gateway.post(f"/wecom/callback/{merchant}", params=params, data=body,
                                  headers={"Content-Type": "text/xml"})
        error = (await resp.json())["error"]
        return resp.status, error["code"], error["message"].lower()

    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    genuine = _envelope(encrypt)
    not_xml = _encrypt("not xml")
    declares = _encrypt('<!DOCTYPE xml [<!ENTITY s "x">]><xml><State>&s;</State></xml>')
    with structlog.testing.capture_logs() as logs:
        answers = [
            await refused({}, genuine),
            await refused(_signed(encrypt, timestamp="1000000000"), genuine),
            await refused(_signed(encrypt), genuine, merchant="nobody"),
            await refused({**_signed(encrypt), "msg_signature": "f" * 40}, genuine),
            await refused(_signed(encrypt), "<xml><Encrypt>"),
            await refused(*_unsigned_hostile(QUADRATIC)),
            await refused(_signed(not_xml), _envelope(not_xml)),
            await refused(_signed(declares), _envelope(declares)),
            await refused(_signed(encrypt), " " * (MAX_CALLBACK_BODY + 1)),
        ]
        params = _signed(encrypt)
        assert await _post(gateway, params, genuine) == (200, "success")
        answers.append(await refused(params, genuine))
    expected = [
        (400, "bad_request", "nonce"), (403, "stale_timestamp", "timestamp"),
        (404, "callback_not_configured", "callback"), (403, "bad_signature", "msg_signature"),
        (400, "malformed", "body"), (400, "malformed", "body"),
        (400, "malformed", "decrypted"), (400, "malformed", "decrypted"),
        (413, "body_too_large", str(MAX_CALLBACK_BODY)), (403, "replayed_nonce", "nonce"),
    ]
    for (status, code, message), (want_status, want_code, words) in zip(
            answers, expected, strict=True):
        assert (status, code) == (want_status, want_code)
        assert words in message, (code, message)
    warnings = [(e["event"], e.get("reason")) for e in logs if e["log_level"] == "warning"]
    assert warnings == [("callback.refused", reason) for reason in (
        "bad_signature", "malformed", "xml_forbidden", "malformed", "xml_forbidden",
        "body_too_large", "replayed_nonce")]
    assert await _adds_and_inbox(gateway, *tenants) == (1, 1)


async def test_an_add_counts_on_the_day_wecom_says_it_happened(
    gateway: TestClient[Any, Any],
) -> None:
    """The event's CreateTime, not the moment we work it, picks its day: a callback that
    arrives (or is worked) days late still counts on the day the shopper added us."""
    tenants = await _configured(gateway)
    created = int(time.time()) - 3 * 86400
    message = re.sub(r"<CreateTime>\d+</CreateTime>", f"<CreateTime>{created}</CreateTime>",
                     FakeWeCom.add_contact_event(None, "wmEXT1"))
    encrypt = _encrypt(message)
    assert await _post(gateway, _signed(encrypt), _envelope(encrypt)) == (200, "success")
    assert await _adds_and_inbox(gateway, *tenants) == (1, 1)
    body = await (await gateway.get("/api/stats?by=day", headers=tenants[0].auth)).json()
    day = datetime.fromtimestamp(created, ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert [(r["day"], r["adds"]) for r in body["rows"] if r["adds"]] == [(day, 1)]


async def test_a_callback_body_that_stops_arriving_is_a_408_and_stores_nothing(
    aiohttp_client: Any, tmp_path: Path,
) -> None:
    """A signed add, then its body stops halfway: the callback's read gives up after
    ``server.body_idle_seconds`` (it waited for ever before), and stores nothing; WeCom's
    retry of it, whole, counts once (its nonce was not taken by the stalled one)."""
    gateway = await aiohttp_client(create_app(make_settings(tmp_path,
                                                            server__body_idle_seconds=0.5)))
    tenants = await _configured(gateway)
    # One ciphertext, in the body and in the signature: the whole body would be stored.
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    body, params = _envelope(encrypt).encode(), _signed(encrypt)
    assert gateway.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    writer.write(f"POST /wecom/callback/acme?{urlencode(params)} HTTP/1.1\r\nHost: a\r\n"
                 f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[:40])
    await writer.drain()
    status, head, answer = await asyncio.wait_for(_answer_of(reader), DEADLINE)
    writer.close()
    assert (status, b"connection: close" in head) == (408, True), head
    assert json.loads(answer)["error"]["code"] == "request_timeout"
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)
    assert await _post(gateway, params, body) == (200, "success")
    assert await _adds_and_inbox(gateway, *tenants) == (1, 1)


async def test_a_declared_length_over_the_cap_is_refused_before_the_body_arrives(
    gateway: TestClient[Any, Any],
) -> None:
    """A Content-Length over the cap is answered at once: the server neither waits for
    nor reads a body it would refuse (a sender that never sends it ties nothing up)."""
    tenants = await _configured(gateway)
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    never = asyncio.Event()

    async def stalled() -> Any:
        yield b"<xml>"
        await never.wait()  # the rest of the declared body never comes

    post = gateway.post("/wecom/callback/acme", params=_signed(encrypt), data=stalled(),
                        headers={"Content-Type": "text/xml",
                                 "Content-Length": str(10 * MAX_CALLBACK_BODY)})
    resp = await asyncio.wait_for(post, timeout=20)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "body_too_large"
    never.set()
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


async def test_a_url_check_without_echostr_is_refused_and_logged(
    gateway: TestClient[Any, Any],
) -> None:
    """WeCom's URL check signed over an empty ``echostr`` and sent without one: the
    signature holds (nothing stands in for the missing text), the ciphertext does not; a
    403 naming it, and the same ``callback.refused`` warning a POST's refusal gives."""
    tenants = await _configured(gateway)
    with structlog.testing.capture_logs() as logs:
        resp = await gateway.get("/wecom/callback/acme", params=_signed(""))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["code"] == "bad_ciphertext" and "encrypt" in error["message"].lower()
    assert [(e["event"], e.get("reason")) for e in logs if e["log_level"] == "warning"] == [
        ("callback.refused", "bad_ciphertext")]
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


async def test_a_body_that_is_not_utf8_is_malformed_and_logged_so(
    gateway: TestClient[Any, Any],
) -> None:
    """Bytes that are not UTF-8 are no WeCom message: a 400 ``malformed``, logged with the
    reason ``malformed`` (as a body that is not XML is), nothing stored."""
    tenants = await _configured(gateway)
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    body = _envelope(encrypt).encode().replace(b"<AgentID>", b"<AgentID>\xff\xfe")
    with structlog.testing.capture_logs() as logs:
        assert await _post(gateway, _signed(encrypt), body) == (400, "malformed")
    assert [(e["event"], e.get("reason")) for e in logs if e["log_level"] == "warning"] == [
        ("callback.refused", "malformed")]
    assert await _adds_and_inbox(gateway, *tenants) == (0, 0)


# --- a real gateway process -------------------------------------------------------------
def _merchant_token(env: dict[str, str], merchant: str) -> dict[str, str]:
    made = run(env, "merchant", "create", merchant, "--name", merchant.title())
    assert made.returncode == 0, made.stderr
    token = run(env, "token", "--merchant", merchant, "--role", "merchant").stdout.strip()
    return {"Authorization": f"Bearer {token}"}


async def _set_up(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> str:
    """The merchant's callback configured and one product; its share link's code."""
    resp = await http.put(f"{base}/api/entry", json=ENTRY, headers=auth)
    assert resp.status == 200, await resp.text()
    resp = await http.post(f"{base}/api/products", headers=auth, json={
        "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}})
    assert resp.status == 201, await resp.text()
    code: str = (await resp.json())["code"]
    return code


async def test_share_links_keep_answering_while_four_clients_send_entity_bombs(
    cli_env: dict[str, str], tmp_path: Path,
) -> None:
    """The hardening issue's attack: 4 attackers, and shoppers sent on meanwhile.

    Each attacker sends billion-laughs callbacks for a real, configured merchant with a
    fresh timestamp (all anyone can forge), pausing 50 ms after each answer; meanwhile a
    shopper opens the share link every 20 ms. Before the fix each bomb cost 0.2 to 0.8 s of
    CPU and the shoppers waited behind them. What the shoppers notice is that every bomb
    stops at its <!DOCTYPE; how fast their links answer is a timing, and belongs to bench/.
    """
    auth = _merchant_token(cli_env, "acme")
    _merchant_token(cli_env, "beta")
    bombs_each, pause, click_every = 15, 0.05, 0.02
    with serving(cli_env, log=tmp_path / "gateway.log") as (_, base):
        async with aiohttp.ClientSession() as http:
            code = await _set_up(http, base, auth)
            link = f"{base}/p/{code}"

            async def click() -> None:
                async with http.get(link, headers={"User-Agent": TAOBAO_UA},
                                    allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(10)) as resp:
                    assert resp.status == 302

            for _ in range(20):
                await click()  # warm: the link cached, the connection open

            async def attacker(index: int) -> list[int]:
                statuses: list[int] = []
                async with aiohttp.ClientSession() as own:  # a connection of its own
                    while len(statuses) < bombs_each:
                        bomb = BILLION_LAUGHS[(index + len(statuses)) % len(BILLION_LAUGHS)]
                        params, body = _unsigned_hostile(bomb)
                        async with own.post(f"{base}/wecom/callback/acme", params=params,
                                            data=body, timeout=aiohttp.ClientTimeout(10),
                                            ) as resp:
                            statuses.append(resp.status)
                        await asyncio.sleep(pause)
                return statuses

            attack = asyncio.gather(*(attacker(i) for i in range(4)))
            await asyncio.sleep(0.2)  # the attack under way
            # Shoppers arrive on a schedule, not after the last one is answered: one who
            # comes while the server is stuck waits, and counts (no coordinated omission).
            clicks = []
            while not attack.done() or len(clicks) < 20:
                clicks.append(asyncio.ensure_future(click()))
                await asyncio.sleep(click_every)
            statuses = [s for each in await attack for s in each]
            await asyncio.gather(*clicks)
    # Every shopper was sent on (click() asserts the 302, bounded by a client timeout that
    # bounds a hang). Every bomb was refused with a 4xx, before a single entity was
    # expanded: at its <!DOCTYPE, or (the deep one, more markup than an envelope holds)
    # unparsed. (Counts, not durations: the attack is 4 x 15 bombs, however long a busy
    # machine takes over them.)
    assert len(statuses) == 4 * bombs_each and all(400 <= s < 500 for s in statuses), statuses
    logged = [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines()
              if line.startswith("{")]
    reasons = [e.get("reason") for e in logged if e["event"] == "callback.refused"]
    assert len(reasons) == len(statuses), reasons
    assert set(reasons) == {"xml_forbidden", "too_much_markup"}, reasons


async def test_a_replayed_nonce_is_refused_after_a_restart(
    cli_env: dict[str, str], tmp_path: Path,
) -> None:
    """The nonces seen are in storage, not only in memory: a restart forgets none."""
    auths = {m: _merchant_token(cli_env, m) for m in ("acme", "beta")}
    encrypt = _encrypt(FakeWeCom.add_contact_event(None, "wmEXT1"))
    params, body = _signed(encrypt, nonce="1717171717"), _envelope(encrypt)
    log = tmp_path / "gateway.log"
    async with aiohttp.ClientSession() as http:

        async def post(base: str, merchant: str, query: dict[str, str]) -> tuple[int, str]:
            async with http.post(f"{base}/wecom/callback/{merchant}", params=query,
                                 data=body) as resp:
                if resp.status == 200:
                    return 200, await resp.text()
                return resp.status, (await resp.json())["error"]["code"]

        with serving(cli_env, log=log) as (first, base):
            for auth in auths.values():
                await _set_up(http, base, auth)
            assert await post(base, "acme", params) == (200, "success")
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) == 0
        with serving(cli_env, log=log) as (_, base):
            assert await post(base, "acme", params) == (403, "replayed_nonce")
            # Nonces are per merchant, and a new one is welcome after the restart too.
            assert await post(base, "beta", params) == (200, "success")
            fresh = _signed(encrypt, nonce="1717171718")
            assert await post(base, "acme", fresh) == (200, "success")


MALFORMED_REQUESTS = {
    "bad request line": b"GET / HTTP/1.1 trailing\r\nHost: a\r\n\r\n",
    "bad header": b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    "over-long header": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 20_000
                        + b"\r\n\r\n",
    "control character in the path": b"GET /p/\x01x HTTP/1.1\r\nHost: a\r\n\r\n",
}


async def test_a_malformed_request_is_one_json_warning_not_a_traceback(
    cli_env: dict[str, str], tmp_path: Path,
) -> None:
    """Requests aiohttp cannot parse, a callback whose client gives up halfway through the
    body, a body that says gzip and is not, and a form part aiohttp warns about: each is one
    JSON line at warning level in the log, never a traceback or a line of plain text."""
    auth = _merchant_token(cli_env, "acme")
    log = tmp_path / "gateway.log"
    with serving(cli_env, log=log) as (proc, base):
        async with aiohttp.ClientSession() as http:
            await _set_up(http, base, auth)
        port = int(base.rsplit(":", 1)[1])
        start = log.stat().st_size  # what the server says from here on
        for raw in MALFORMED_REQUESTS.values():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(raw)
                assert conn.recv(64).startswith(b"HTTP/1.0 400"), raw[:40]
        query = urlencode(_signed(_encrypt("<xml/>")))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"POST /wecom/callback/acme?{query} HTTP/1.1\r\nHost: a\r\n"
                         "Content-Length: 100\r\n\r\n<xml>".encode())
            # Another request answered after this one arrived: by then the callback's
            # handler is waiting for the rest of the body.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                assert other.recv(64).startswith(b"HTTP/1.1 200")
            conn.shutdown(socket.SHUT_WR)  # the client gives up halfway through its body
            while conn.recv(4096):  # until the server has dealt with it and hung up
                pass
        # A body that says gzip and is not: the handler's warning, and not aiohttp's
        # "Unhandled exception" when it reads the rest of that body after the answer.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"POST /api/products HTTP/1.1\r\nHost: a\r\nAuthorization: "
                         + auth["Authorization"].encode() + b"\r\nContent-Type: "
                         b"application/json\r\nContent-Encoding: gzip\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            answer = b""
            while chunk := conn.recv(4096):  # the 400, then the server hangs up
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 400"), answer
        # A form part whose Content-Disposition aiohttp warns about (a Python warning).
        part = (b"--zz\r\nContent-Disposition: form-data; name=\"csrf\"; "
                b"filename*=UTF-8''%ff%fe\r\n\r\nx\r\n--zz--\r\n")
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{base}/dashboard/login", data=part, headers={
                "Content-Type": "multipart/form-data; boundary=zz"})
            assert resp.status == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    lines = log.read_bytes()[start:].decode().splitlines()
    assert "Traceback" not in "\n".join(lines)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [r["logger"] for r in records if "BadContentDispositionParam" in r["event"]] == [
        "py.warnings"]
    warned = [r for r in records if r["level"] == "warning" and r.get("logger") != "py.warnings"]
    assert [r["event"] for r in warned] == (["http.malformed_request"] * len(MALFORMED_REQUESTS)
                                            + ["http.body_unreadable"] * 2), lines
    assert warned[-1]["error"] == "ContentEncodingError"
    assert {r["error"] for r in warned} >= {"BadStatusLine", "LineTooLong"}
    assert not [r for r in records if r["level"] in ("error", "critical")], lines
