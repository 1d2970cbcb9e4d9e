"""The fuzz suite: generated hostile requests against a real gateway over loopback.

Hypothesis builds each request (route, method, path, query, headers, body) from parts an
attacker or bad luck would send: lone surrogates and control characters in every string,
NaN and numbers no store can keep, deep nesting, wrong types, URLs that hide another host,
tokens that are not tokens, XML that is not WeCom's. Each test function starts one gateway
(in a thread, on an ephemeral loopback port, with its SQLite file, a fake WeCom and a dead
WeChat address) and sends every example to it with ``http.client``. For every answer:

* no 5xx (the one exception: ``/e/`` answers 503 ``entry_unavailable`` when WeCom refuses
  to make a contact way, the merchant's configuration being wrong: an honest answer);
* an error on ``/api/`` or the WeCom callback is the JSON shape
  ``{"error": {"code", "message"[, "field"]}}``; an error on a shopper route is a page;
* a shopper is redirected only to https on an allowed host, or to an app's own scheme;
* a rejected request (4xx) that could write changed nothing stored (the configuration
  tables compared before and after; clicks are written later by accepted requests).

At least 5,000 requests per run (``QUOTAS``). The seed is printed in pytest's header and in
every failure; ``LINKLOOP_FUZZ_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openpyxl
import pytest
from ada_url import URL
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from adapters import ADAPTERS, platform_ids
from adapters.urls import host_is_within
from gateway.app import create_app
from gateway.appkeys import STORE, TOKENS
from gateway.bulk import XLSX_TYPE
from gateway.store import Credentials, Entry, Merchant

from .conftest import BOT_UA, DESKTOP_UA, FUZZ_SEED, TAOBAO_UA, make_settings
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .test_url_check import TABLE as URL_TABLE

#: Requests each test function sends; together at least the 5,000 the issue asks for.
QUOTAS = {"products": 1700, "entry_and_credentials": 900, "queries": 900, "shopper": 1100,
          "callback": 500, "console": 600}
assert sum(QUOTAS.values()) >= 5000

DOMAINS = ("shop.example.com",)
#: Where a shopper may be sent over https: every platform's hosts, the merchants' domains
#: and WeCom's acquisition links.
REDIRECT_HOSTS = (*{h for a in ADAPTERS for h in a.owned_hosts}, *DOMAINS,
                  "work.weixin.qq.com")
#: Schemes a redirect must never use (an app's own scheme, weixin:// or taobao://, is fine).
FORBIDDEN_SCHEMES = {"http:", "javascript:", "data:", "file:", "vbscript:", "blob:", "ftp:"}
#: What a request writes before it answers, when accepted; rejected, none of it may change.
#: (Clicks, events, rollups, an inbox row's done mark and group members are written later,
#: in the background, for requests accepted earlier.)
SNAPSHOT = tuple(f"SELECT {columns} FROM {table}" for table, columns in (
    ("merchants", "*"), ("products", "*"), ("entries", "*"), ("entry_ways", "*"),
    ("app_credentials", "*"), ("users", "*"), ("link_changes", "*"), ("channels", "*"),
    ("wecom_inbox", "id, merchant_id, nonce, message")))
CODE = re.compile(r"[a-z][a-z0-9_]*")
SENT: dict[str, int] = {}


# --- the gateway under test -----------------------------------------------------------------
@dataclass
class Live:
    """A gateway and a fake WeCom on loopback, run by an event loop in a thread."""

    tmp_path: Path
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    port: int = 0
    app: web.Application | None = None
    ids: dict[str, int] = field(default_factory=dict)
    #: Products the fuzz made itself (201s), changed and retired by later examples.
    created: list[int] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _db: sqlite3.Connection | None = None

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return port

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        wecom_port = self.run(self._serve(FakeWeCom().app()))
        with socket.socket() as sock:  # a port nothing listens on: WeChat is never reached
            sock.bind(("127.0.0.1", 0))
            dead = sock.getsockname()[1]
        self.app = create_app(make_settings(
            self.tmp_path, wecom__api_base=f"http://127.0.0.1:{wecom_port}/cgi-bin",
            wechat__api_base=f"http://127.0.0.1:{dead}/", wecom__timeout_seconds=2.0,
            wechat__timeout_seconds=0.5))
        self.port = self.run(self._serve(self.app))
        self.run(self._seed())
        self._db = sqlite3.connect(f"file:{self.tmp_path / 'data' / 'linkloop.db'}?mode=ro",
                                   uri=True, check_same_thread=False)

    async def _seed(self) -> None:
        """Two merchants, a product each, an entry with callbacks, mini-program credentials."""
        assert self.app is not None
        store, tokens = self.app[STORE], self.app[TOKENS]
        for merchant in ("acme", "rival"):
            await store.create_merchant(Merchant(merchant, merchant.title(), DOMAINS))
        spare = await store.create_product("acme", code="acme-spare", title="备用",
                                           targets={"jd": {"sku": "100000000002"}},
                                           image_url=None, price=None)
        self.ids["spare"] = spare.id
        for merchant in ("acme", "rival"):
            product = await store.create_product(
                merchant, code=f"{merchant}-tea", title="明前龙井",
                targets={"jd": {"sku": "100000000001"}, "taobao": {"item_id": "600000000001"},
                         "web": {"url": "https://shop.example.com/tea"}},
                image_url="https://img.example.com/tea.jpg", price="168.00")
            self.ids[merchant], self.codes[merchant] = product.id, product.code
            self.tokens[merchant] = tokens.mint(merchant, "merchant", 3600)
            self.tokens[f"{merchant}-marketing"] = tokens.mint(merchant, "marketing", 3600)
        self.tokens["expired"] = tokens.mint("acme", "merchant", -60)
        self.tokens["ghost"] = tokens.mint("ghost", "merchant", 3600)
        await store.put_entry(Entry("acme", "acquisition_link",
                                    {"url": "https://work.weixin.qq.com/ca/cawgood"},
                                    {"corp_id": CORP_ID, "secret": SECRET,
                                     "callback_token": CALLBACK_TOKEN,
                                     "encoding_aes_key": AES_KEY}))
        await store.put_credentials(Credentials("acme", "wechat_miniprogram",
                                                "wx0123456789abcdef", "0" * 32))

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        assert self._db is not None
        return [sorted(self._db.execute(query).fetchall(), key=repr) for query in SNAPSHOT]

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
        for runner in reversed(self._runners):
            self.run(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.loop.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    gateway = Live(tmp_path)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


# --- one request, and what every answer must be ---------------------------------------------
@dataclass(frozen=True)
class Req:
    method: str
    path: str
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None
    #: The route's template, for the coverage check (``/api/products/{id}``).
    route: str = ""


class Client:
    """Keep-alive HTTP/1.1 to the gateway; a connection the server closed is opened again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, req: Req) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            try:
                self.conn.putrequest(req.method, req.path, skip_accept_encoding=True)
                for name, value in req.headers:
                    self.conn.putheader(name, value)
                if req.body is not None:
                    self.conn.putheader("Content-Length", str(len(req.body)))
                self.conn.endheaders(req.body)
                resp = self.conn.getresponse()
                body = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.reopen()
                return resp.status, headers, body
            except (http.client.RemoteDisconnected, ConnectionError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.reopen()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def reopen(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def _is_json_error(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    if not isinstance(answer, dict) or set(answer) != {"error"}:
        return False
    error = answer["error"]
    return (isinstance(error, dict) and {"code", "message"} <= set(error)
            <= {"code", "message", "field"}
            and isinstance(error["code"], str) and bool(CODE.fullmatch(error["code"]))
            and isinstance(error["message"], str) and bool(error["message"])
            and isinstance(error.get("field", ""), str))


def _safe_redirect(location: str) -> bool:
    """https on an allowed host, or an app's own scheme; never anything else."""
    try:
        url = URL(location)
    except ValueError:
        return False
    if url.protocol == "https:":
        return (not url.username and not url.password and not url.port
                and host_is_within(url.hostname, REDIRECT_HOSTS))
    return url.protocol not in FORBIDDEN_SCHEMES and not location.startswith("/")


def check(live: Live, client: Client, family: str, req: Req) -> None:
    """Send one request and hold its answer to the rules in the module's docstring."""
    writes = req.method not in ("GET", "HEAD")
    before = live.snapshot() if writes else None
    status, headers, body = client.send(req)
    SENT[family] = SENT.get(family, 0) + 1
    why = (f"{req.method} {req.path[:200]} -> {status} {body[:300]!r} "
           f"(replay: LINKLOOP_FUZZ_SEED={FUZZ_SEED})")
    content_type = headers.get("content-type", "")
    api = req.path.startswith(("/api/", "/wecom/callback/"))
    shopper = req.path.startswith(("/p/", "/o/", "/e/"))
    if status == 503 and req.path.startswith("/e/"):
        assert b"entry_unavailable" in body, why  # WeCom refused: said, not crashed
    else:
        assert status < 500, why
    if status >= 400:
        if api:
            assert content_type.startswith("application/json") and _is_json_error(body), why
        elif shopper:
            assert content_type.startswith("text/html"), why
            assert req.method == "HEAD" or b"<html" in body, why
        if before is not None:
            assert live.snapshot() == before, f"a rejected request changed storage: {why}"
    elif 300 <= status < 400 and shopper:
        assert _safe_redirect(headers.get("location", "")), why
    elif status == 201 and req.route == "/api/products":
        live.created.append(int(json.loads(body)["id"]))


SETTINGS = settings(
    deadline=None, database=None, derandomize=False, print_blob=True,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])


def _quota(family: str) -> Any:
    return settings(SETTINGS, max_examples=QUOTAS[family])


# --- the parts requests are made of ---------------------------------------------------------
HOSTILE = ["\ud800", "\udfff", "\ud83d", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u202e",
           "\ufeff", "\u200b", "\u3000", "\t", "\n", "\r", "\\", "'", '"', "<script>", "&",
           "%", "%00", "%ED%A0%80", "../", "=", "+", "-", "@", "茶", "😀", "ＪＤ", "。", "\x9b",
           "NaN", "null", "[]", "{}", "'; DROP TABLE products; --"]
hostile_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=4)), max_size=6).map("".join),
    st.sampled_from(HOSTILE),
    # Long text, cheaply: one piece repeated past every length limit.
    st.tuples(st.sampled_from([*HOSTILE, "a", "茶"]), st.integers(100, 3000)).map(
        lambda piece_times: piece_times[0] * piece_times[1]),
)
hostile_url = st.one_of(
    st.sampled_from([row[0] for row in URL_TABLE]),
    st.builds(lambda scheme, auth, host, tail: f"{scheme}{auth}{host}{tail}",
              st.sampled_from(["https://", "http://", "HTTPS://", "https:/\\", "//", "https:",
                               "javascript:", ""]),
              st.sampled_from(["", "jd.com@", "evil.example.net\\@", "a:b@", "%40"]),
              st.sampled_from(["shop.example.com", "item.jd.com", "evil.example.net",
                               "work.weixin.qq.com", "127.0.0.1", "[::1]", "shop.example.com.",
                               "shop。example.com", "%73hop.example.com", "img.example.com",
                               "wxaurl.cn", "xn--a.example.com"]),
              st.one_of(st.sampled_from(["", "/", "/ca/x", ":8443/", "/tea?x=1#y", "/\x00",
                                         "#@evil.example.net", "/ca/x#f"]),
                        hostile_text.map(lambda t: "/" + t))),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 10**30, 99999999.99, 100000000.01]),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaf = st.one_of(hostile_text, hostile_url, numbers, st.booleans(), st.none())
anything = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)), max_leaves=4)

VALID_FIELDS = {"item_id": "600000000001", "sku": "100000000001", "goods_id": "10000000001",
                "product_id": "3600000000000001", "appid": "wx0123456789abcdef",
                "path": "pages/item/index", "page": "pages/item/index", "query": "id=1",
                "share_token": "￥AbC123￥", "url": "https://shop.example.com/tea"}
field_value = st.one_of(st.sampled_from(list(VALID_FIELDS.values())), hostile_text,
                        hostile_url, numbers, leaf)
target = st.dictionaries(
    st.one_of(st.sampled_from(list(VALID_FIELDS)), hostile_text), field_value, max_size=4)
targets = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(platform_ids()), hostile_text),
                    st.one_of(target, anything), max_size=3),
    anything)
product_body = st.fixed_dictionaries({}, optional={
    "title": st.one_of(st.just("明前龙井"), hostile_text, anything),
    "image_url": st.one_of(st.just("https://img.example.com/x.jpg"), hostile_url, anything),
    "price": st.one_of(numbers, hostile_text, st.sampled_from(["99.90", "1.234", "-1"])),
    "slug": st.one_of(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1,
                              max_size=70), hostile_text, numbers),
    "targets": targets,
    "status": st.sampled_from(["retired", "active"]),
})
entry_body = st.fixed_dictionaries({}, optional={
    "kind": st.one_of(st.sampled_from(["acquisition_link", "contact_way", "group", "static"]),
                      hostile_text, anything),
    "url": st.one_of(st.just("https://work.weixin.qq.com/ca/cawnew"), hostile_url, anything),
    "qr_url": st.one_of(st.just("https://img.example.com/q.png"), hostile_url, anything),
    "users": st.one_of(st.just(["zhangsan"]), st.lists(hostile_text, max_size=3), anything),
    "chat_ids": st.one_of(st.just(["wr1"]), st.lists(hostile_text, max_size=3), anything),
    "corp_id": st.one_of(st.just(CORP_ID), hostile_text, st.none(), numbers),
    "secret": st.one_of(st.just(SECRET), hostile_text, st.none(), numbers),
    "callback_token": st.one_of(st.just(CALLBACK_TOKEN), hostile_text, st.none()),
    "encoding_aes_key": st.one_of(st.just(AES_KEY), hostile_text, st.none()),
})
credentials_body = st.fixed_dictionaries({}, optional={
    "appid": st.one_of(st.just("wx0123456789abcdef"), hostile_text, numbers),
    "secret": st.one_of(st.just("a" * 32), hostile_text, numbers),
})


def _encode(body: Any, how: str) -> bytes:
    """A JSON value as bytes, the ways a client (or an attacker) might write it."""
    if how == "nan_literals":
        return json.dumps(body, allow_nan=True).encode()
    if how == "raw_surrogates":  # \ud800 as bytes, not as an escape
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "deep":
        return b"[" * 5000 + json.dumps(body).encode() + b"]" * 5000
    if how == "truncated":
        return json.dumps(body).encode()[:-1]
    if how == "latin1":
        return json.dumps(body, ensure_ascii=False).encode("latin-1", "replace")
    return json.dumps(body).encode()


encodings = st.sampled_from(["plain", "plain", "plain", "nan_literals", "raw_surrogates",
                             "deep", "truncated", "latin1"])
raw_bytes = st.one_of(st.binary(max_size=300), st.sampled_from([
    b"", b"null", b"[]", b"{", b'{"title": "\\ud800"}', b"\xef\xbb\xbf{}", b"1e999999",
    b"9" * 5000, b"[" * 30000 + b"]" * 30000, b'{"a": NaN}', b"\xff\xfe{\x00}\x00"]))


def _token_header(live: Live, who: str) -> tuple[tuple[str, bytes], ...]:
    if who == "none":
        return ()
    if who in live.tokens:
        return (("Authorization", f"Bearer {live.tokens[who]}".encode()),)
    return (("Authorization", {"garbage": b"Bearer garbage",
                               "latin1": b"Bearer \xff\xfe\x00x".replace(b"\x00", b""),
                               "basic": b"Basic YWRtaW46YWRtaW4=",
                               "empty": b"Bearer ",
                               "alg_none": b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhY21lIn0.",
                               }[who]),)


tokens = st.sampled_from(["acme", "acme", "acme", "acme-marketing", "rival", "expired",
                          "ghost", "none", "garbage", "latin1", "basic", "empty",
                          "alg_none"])


def _q(text: str) -> str:
    """Percent-encoded as a client would send it (a lone surrogate as its UTF-8 bytes).

    Cut to 2,000 bytes at most: a request line past aiohttp's 8,190-byte limit is refused by
    its HTTP parser before any route runs (malformed HTTP is not this suite's subject)."""
    text = text[:300]
    while len(encoded := quote(text, safe="", errors="surrogatepass")) > 2000:
        text = text[: len(text) // 2]
    return encoded


path_id = st.one_of(st.sampled_from(["{acme}", "{acme}", "{new}", "{new}", "{spare}", "{rival}",
                                     "99999999999999999999",
                                     "-1", "0", "1_0", "%D9%A1", "+1", "1.0", "abc", "%00",
                                     "9223372036854775807", "9223372036854775808"]),
                    hostile_text.map(_q))


def _ids(live: Live, text: str) -> str:
    """Ids by name: the seed products, and the product the fuzz made last."""
    new = live.created[-1] if live.created else live.ids["acme"]
    for name, value in (("{new}", new), *((f"{{{k}}}", v) for k, v in live.ids.items())):
        text = text.replace(name, str(value))
    return text


query_value = st.one_of(hostile_text, numbers.map(str), st.sampled_from(
    ["", "1", "20", "100", "101", "2026-01-31", "20260131", "2026-W05-6", "0001-01-05",
     "9999-12-31", "platform", "product", "day", "channel", "csv", "json", "xml", "taobao",
     "web", "wechat", "poster_1", "A", "{acme}", "{rival}"]))


def _query(live: Live, names: list[str], values: list[str]) -> str:
    pairs = [f"{_q(n)}={_q(_ids(live, v))}" for n, v in zip(names, values, strict=False)]
    # Whole pairs, within aiohttp's request-line limit (see _q).
    while sum(len(p) + 1 for p in pairs) > 7000:
        pairs.pop()
    return "?" + "&".join(pairs) if pairs else ""


json_content_type = st.sampled_from([b"application/json", b"application/json",
                                     b"application/json; charset=utf-8", b"text/plain",
                                     b"application/x-www-form-urlencoded", b"application/JSON"])


@st.composite
def api_body(draw: st.DrawFn, shape: st.SearchStrategy[Any]) -> bytes:
    """A body: mostly the route's own shape, sometimes any JSON value, sometimes not JSON."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(raw_bytes)
    return _encode(draw(anything if kind == 1 else shape), draw(encodings))


# --- the families ---------------------------------------------------------------------------
@st.composite
def product_requests(draw: st.DrawFn, live: Live) -> Req:
    method, template = draw(st.sampled_from([
        ("POST", "/api/products"), ("POST", "/api/products"), ("PATCH", "/api/products/{id}"),
        ("PATCH", "/api/products/{id}"), ("GET", "/api/products/{id}"),
        ("DELETE", "/api/products/{id}"), ("GET", "/api/products/{id}/qr.svg"),
        ("GET", "/api/products/{id}/qr.png"), ("PUT", "/api/products"),
        ("POST", "/api/products/{id}")]))
    chosen_id = draw(path_id)
    if method == "DELETE" and chosen_id == "{acme}":
        chosen_id = "{spare}"  # acme's first product stays live for the changes to reach it
    path = template.replace("{id}", _ids(live, chosen_id))
    if template.endswith("qr.svg") or template.endswith("qr.png"):
        path += _query(live, ["ch"], [draw(query_value)])
    headers = _token_header(live, draw(tokens))
    body = None
    if method in ("POST", "PATCH", "PUT"):
        headers += (("Content-Type", draw(json_content_type)),)
        body = draw(api_body(product_body))
    return Req(method, path, headers, body, template)


@st.composite
def entry_requests(draw: st.DrawFn, live: Live) -> Req:
    method, template, shape = draw(st.sampled_from([
        ("PUT", "/api/entry", entry_body), ("PUT", "/api/entry", entry_body),
        ("GET", "/api/entry", None), ("POST", "/api/entry", entry_body),
        ("PUT", "/api/credentials/{platform}", credentials_body),
        ("GET", "/api/credentials", None)]))
    path = template.replace("{platform}", draw(st.one_of(
        st.sampled_from(["wechat_miniprogram", "wechat_miniprogram", "taobao"]),
        hostile_text.map(_q))))
    headers = _token_header(live, draw(tokens))
    body = None
    if shape is not None:
        headers += (("Content-Type", draw(json_content_type)),)
        body = draw(api_body(shape))
    return Req(method, path, headers, body, template)


@st.composite
def query_requests(draw: st.DrawFn, live: Live) -> Req:
    template, names = draw(st.sampled_from([
        ("/api/stats", ["from", "to", "by", "product", "platform", "channel", "format"]),
        ("/api/products", ["limit", "after"]),
        ("/api/stats", ["product", "by", "format"]),
        # Public, with no parameter of their own: hostile query strings are ignored.
        ("/api/openapi.json", []),
        ("/api/docs", []),
        ("/api/alerts", ["days"]),
    ]))
    known = st.sampled_from(names) if names else st.nothing()
    chosen = draw(st.lists(st.one_of(known, hostile_text), max_size=5))
    values = [draw(query_value) for _ in chosen]
    path = template + _query(live, chosen, values)
    return Req("GET", path, _token_header(live, draw(tokens)), None, template)


channel_body = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["spring_live", "taobao", "Li Live", ""]), hostile_text,
                      numbers),
    "label": st.one_of(st.just("李老师直播间"), hostile_text, anything),
})
IMPORT_COLUMNS = ["title", "price", "slug", "valid_from", "targets.jd.sku", "targets.web.url",
                  "targets.taobao.item_id", "share_url"]
cell = st.one_of(st.sampled_from(["明前龙井", "100012043978", "https://shop.example.com/t",
                                  "=HYPERLINK(\"https://evil\")", "2026-06-18 20:00", ""]),
                 hostile_text, hostile_url, numbers.map(str))


@st.composite
def spreadsheet(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A product import: CSV or XLSX of hostile cells under real and made-up columns, or
    bytes that are neither; with the content type it is sent as."""
    header = draw(st.lists(st.one_of(st.sampled_from(IMPORT_COLUMNS), hostile_text),
                           min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(cell, min_size=len(header), max_size=len(header)),
                         max_size=4))
    kind = draw(st.sampled_from(["csv", "csv", "xlsx", "raw"]))
    if kind == "raw":
        return draw(raw_bytes), draw(st.sampled_from(
            [b"text/csv", XLSX_TYPE.encode(), b"application/octet-stream", b"image/png"]))
    if kind == "csv":
        text = "\n".join(",".join(f'"{c}"' for c in row) for row in [header, *rows])
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]))
        return text.encode(encoding, "replace"), b"text/csv"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [header, *rows]:
        # What a workbook can hold: no control characters, no lone surrogates.
        sheet.append([re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]", "", c)
                      for c in row])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue(), XLSX_TYPE.encode()


@st.composite
def console_requests(draw: st.DrawFn, live: Live) -> Req:
    """The console's API: restore, preview, import, the template and export, channels and
    the WeCom entry check."""
    method, template = draw(st.sampled_from([
        ("POST", "/api/products/{id}/restore"), ("GET", "/api/products/{id}/preview"),
        ("POST", "/api/products/import"), ("POST", "/api/products/import"),
        ("POST", "/api/products/import"), ("GET", "/api/products/import/template"),
        ("GET", "/api/products/export"), ("GET", "/api/channels"), ("POST", "/api/channels"),
        ("POST", "/api/channels"), ("DELETE", "/api/channels/{name}"),
        ("POST", "/api/entry/check"), ("PUT", "/api/products/import")]))
    path = template.replace("{id}", _ids(live, draw(path_id))).replace(
        "{name}", draw(st.one_of(st.sampled_from(["spring_live", "nope"]),
                                 hostile_text.map(lambda t: _q(t) or "x"))))
    names = {"/api/products/{id}/preview": ["os"], "/api/products/import": ["dry_run"],
             "/api/products/import/template": ["format"],
             "/api/products/export": ["format", "q", "state"]}.get(template, [])
    chosen = draw(st.lists(st.one_of(st.sampled_from(names or ["x"]), hostile_text),
                           max_size=3))
    values = [draw(st.one_of(query_value, st.sampled_from(
        ["true", "false", "ios", "android", "csv", "xlsx", "live", "retired"])))
        for _ in chosen]
    path += _query(live, chosen, values)
    headers = _token_header(live, draw(tokens))
    body = None
    if template == "/api/products/import":
        body, content_type = draw(spreadsheet())
        headers += (("Content-Type", content_type),)
    elif method == "POST" and template == "/api/channels":
        headers += (("Content-Type", draw(json_content_type)),)
        body = draw(api_body(channel_body))
    elif method == "POST":
        body = b""
    return Req(method, path, headers, body, template)


user_agents = st.one_of(st.sampled_from([TAOBAO_UA, DESKTOP_UA, BOT_UA, "",
                                         "Mozilla/5.0 (iPhone) MicroMessenger/8.0.47",
                                         "Mozilla/5.0 (iPhone) aweme_30.1.0 JsSdk/2.0"]),
                        hostile_text)


_CTL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"


def _header_bytes(text: str) -> bytes:
    """A header value as HTTP allows it on the wire (RFC 9110: visible ASCII, space, tab and
    any byte from 0x80), whatever its encoding. Control bytes are malformed HTTP, refused by
    aiohttp's parser before any route runs: not this suite's subject."""
    return text.encode("utf-8", "surrogatepass").translate(None, _CTL)[:4000]


@st.composite
def shopper_requests(draw: st.DrawFn, live: Live) -> Req:
    code = draw(st.one_of(st.sampled_from([live.codes["acme"], live.codes["rival"],
                                           "nope-nope", "a" * 200, "%00", "%ED%A0%80", ".."]),
                          hostile_text.map(_q)))
    template = draw(st.sampled_from(["/p/{code}", "/p/{code}", "/o/{code}/{platform}",
                                     "/e/{code}", "/p/{code}/miniprogram-code"]))
    platform = draw(st.one_of(st.sampled_from(["jd", "taobao", "web", "douyin"]),
                              hostile_text.map(_q)))
    path = template.replace("{code}", code).replace("{platform}", platform)
    names = draw(st.lists(st.sampled_from(["ch", "c", "utm_source", "x"]), max_size=3))
    path += _query(live, names, [draw(query_value) for _ in names])
    headers: tuple[tuple[str, bytes], ...] = (
        ("User-Agent", _header_bytes(draw(user_agents))),)
    if draw(st.booleans()):
        headers += (("Referer", _header_bytes(draw(hostile_url))),)
    if draw(st.booleans()):
        headers += (("Cookie", b"ll_v=" + _header_bytes(draw(hostile_text))),)
    if draw(st.booleans()):
        headers += (("X-Forwarded-For", _header_bytes(draw(hostile_text))),)
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]))
    return Req(method, path, headers, b"" if method == "POST" else None, template)


@st.composite
def callback_requests(draw: st.DrawFn, live: Live) -> Req:
    # A merchant segment the route takes: aiohttp's {merchant} is [^{}/]+, and any other
    # path is no callback (our 404 page).
    merchant = draw(st.one_of(st.sampled_from(["acme", "acme", "rival", "ghost"]),
                              hostile_text.map(lambda t: _q(re.sub("[{}/]", "", t)) or "x")))
    inner = draw(st.one_of(
        st.just(FakeWeCom.add_contact_event("garbage-state", "wmEXT")),
        hostile_text, st.sampled_from(["<xml/>", "<xml><Event>x</Event></xml>", "not xml"])))
    how = draw(st.sampled_from(["signed", "signed", "unsigned", "raw", "entities"]))
    params: dict[str, str]
    if how == "signed":  # a valid envelope around anything: decrypts, then the message is junk
        params, body_text = FakeWeCom.envelope(
            inner.encode("utf-8", "replace").decode("utf-8"),
            nonce=f"fuzz{draw(st.integers(0, 2**60))}")
        body = body_text.encode()
    else:
        fresh = st.builds(lambda: str(int(time.time())))  # gets past the timestamp check
        params = {"msg_signature": draw(hostile_text),
                  "timestamp": draw(st.one_of(fresh, fresh, fresh, numbers.map(str),
                                              hostile_text)),
                  "nonce": draw(st.one_of(st.integers(0, 2**60).map(str), hostile_text))}
        if how == "entities":  # a small entity expansion: refused, never expanded far
            body = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt>'
                    b"</xml>")
        elif how == "raw":
            body = draw(raw_bytes)
        else:
            body = draw(hostile_text).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        params["echostr"] = draw(hostile_text)
    names = list(params)
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET"]))
    path = f"/wecom/callback/{merchant}" + _query(live, names, [params[n] for n in names])
    headers = (("Content-Type", b"text/xml"),)
    return Req(method, path, headers, body if method == "POST" else None,
               "/wecom/callback/{merchant}")


# --- the tests ------------------------------------------------------------------------------
def _run(live: Live, family: str, strategy: Any) -> None:
    client = Client(live.port)
    start = SENT.get(family, 0)

    @seed(FUZZ_SEED)
    @_quota(family)
    @given(req=strategy(live))
    def fuzz(req: Req) -> None:
        check(live, client, family, req)

    fuzz()
    assert SENT.get(family, 0) - start >= QUOTAS[family], (family, SENT)


def test_fuzz_products(live: Live) -> None:
    _run(live, "products", product_requests)


def test_fuzz_entry_and_credentials(live: Live) -> None:
    _run(live, "entry_and_credentials", entry_requests)


def test_fuzz_query_parameters(live: Live) -> None:
    _run(live, "queries", query_requests)


def test_fuzz_shopper_routes(live: Live) -> None:
    _run(live, "shopper", shopper_requests)


def test_fuzz_wecom_callback(live: Live) -> None:
    _run(live, "callback", callback_requests)


def test_fuzz_console_api(live: Live) -> None:
    _run(live, "console", console_requests)


def test_every_json_route_is_fuzzed(live: Live) -> None:
    """A route added to the API without a family here would go unfuzzed: fail instead."""
    assert live.app is not None
    fuzzed = {"/api/products", "/api/products/{id}", "/api/products/{id}/qr.{fmt}",
              "/api/entry", "/api/credentials/{platform}", "/api/credentials", "/api/stats",
              "/api/openapi.json", "/api/docs",
              "/api/alerts",
              "/p/{code}", "/p/{code}/miniprogram-code", "/o/{code}/{platform}", "/e/{code}",
              "/wecom/callback/{merchant}", "/api/products/{id}/restore",
              "/api/products/{id}/preview", "/api/products/import",
              "/api/products/import/template", "/api/products/export", "/api/channels",
              "/api/channels/{name}", "/api/entry/check"}
    routes = {re.sub(r"\{(\w+):[^}]*\}", r"{\1}", r.canonical)
              for r in live.app.router.resources()
              if r.canonical.startswith(("/api/", "/p/", "/o/", "/e/", "/wecom/"))}
    assert routes <= fuzzed, routes - fuzzed
