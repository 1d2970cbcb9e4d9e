"""A small fake of WeChat's documented server API, served over loopback.

The calls the gateway makes, with the answers and errcodes WeChat documents for them:

* ``GET cgi-bin/token`` -- an access token per app (a mini-program's, an official account's);
  40013 for an unknown appid or a wrong secret;
* ``POST wxa/generate_urllink`` -- ``{"url_link": "https://wxaurl.cn/..."}``; 40097 for an
  expiry outside 1-30 days;
* ``POST wxa/generatescheme`` -- ``{"openlink": "weixin://dl/business/?t=..."}``;
* ``POST wxa/getwxacodeunlimit`` -- the image itself (a PNG here), or JSON: 40169 for a
  scene longer than 32 characters, 41030 for a page that does not exist;
* ``GET cgi-bin/ticket/getticket?type=jsapi`` -- the JS-SDK ``ticket`` and ``expires_in``;
* every call with an access token: 40001 for a token this fake never issued (or replaced),
  42001 once when told to expire the token.

URL Links and schemes share one daily quota ("每天生成 URL Scheme 和 URL Link 总数量上限"):
past ``quota`` mints every such call answers 45009. ``fail_next[path]`` holds errcodes the
next calls to ``path`` answer, one per call.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import segno
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

#: The merchant's mini-program.
APPID = "wx0123456789abcdef"
APP_SECRET = "0123456789abcdef0123456789abcdef"
#: Where this fake serves its stand-in for WeChat's JS-SDK.
JSSDK_PATH = "/open/js/jweixin-1.6.0.js"
#: The merchant's official account (公众号), for the JS-SDK and the open tag.
OA_APPID = "wxfedcba9876543210"
OA_SECRET = "fedcba9876543210fedcba9876543210"

_SCENE = re.compile(r"[A-Za-z0-9!#$&'()*+,/:;=?@._~-]{1,32}")


def wxacode_image(page: str, scene: str) -> bytes:
    """This fake's mini-program code: a real PNG (a QR code of what a scan would open), so a
    browser draws it and a decoder reads it back."""
    out = io.BytesIO()
    segno.make(f"wxacode:{page}?scene={scene}", error="m").save(out, kind="png", scale=6,
                                                                border=2)
    return out.getvalue()


@dataclass
class FakeWeChat:
    apps: dict[str, str] = field(default_factory=lambda: {APPID: APP_SECRET,
                                                          OA_APPID: OA_SECRET})
    #: Published pages of the mini-program (a code for any other page is 41030).
    pages: set[str] = field(default_factory=lambda: {"pages/item/index"})
    tokens_issued: int = 0
    #: appid -> its newest access token.
    tokens: dict[str, str] = field(default_factory=dict)
    #: Every token still honoured -> its appid. A new token does not end the old one at once
    #: ("新老 access_token 在5分钟内都可用"); an expired one is gone.
    valid: dict[str, str] = field(default_factory=dict)
    #: The next call with a token answers 42001 and ends that token.
    expire_token_once: bool = False
    #: URL Links and schemes WeChat will still mint today (None: no limit).
    quota: int | None = None
    #: path -> errcodes the next calls to it answer, one per call.
    fail_next: dict[str, list[int]] = field(default_factory=dict)
    #: Every call answered with an errcode: (path, errcode).
    refused: list[tuple[str, int]] = field(default_factory=list)
    delay: float = 0.0
    #: The URL Link answered, ``{n}`` numbering them (a test may make WeChat answer oddly).
    url_link: str = "https://wxaurl.cn/fake{n}"
    minted: list[dict[str, Any]] = field(default_factory=list)
    schemes: list[dict[str, Any]] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    tickets_issued: int = 0
    ticket_expires_in: int = 7200
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/wxa/generate_urllink", self.generate_urllink)
        app.router.add_post("/wxa/generatescheme", self.generatescheme)
        app.router.add_post("/wxa/getwxacodeunlimit", self.getwxacodeunlimit)
        app.router.add_get("/cgi-bin/ticket/getticket", self.getticket)
        # The JS-SDK file, for browser tests (the gateway's wechat.jssdk_url points here):
        # wx.config keeps what it was given, where a test can read it.
        app.router.add_get(JSSDK_PATH, self.jssdk)
        return app

    @property
    def current_token(self) -> str:
        return self.tokens.get(APPID, "")

    # --- plumbing ---------------------------------------------------------------------------
    def _error(self, path: str, errcode: int, errmsg: str) -> web.Response:
        self.refused.append((path, errcode))
        return web.json_response({"errcode": errcode, "errmsg": errmsg})

    async def _caller(self, request: web.Request, path: str) -> str | web.Response:
        """The appid whose token the call carries, or the error WeChat answers."""
        if self.delay:
            await asyncio.sleep(self.delay)
        queued = self.fail_next.get(path)
        if queued:
            return self._error(path, queued.pop(0), "refused")
        token = request.query.get("access_token", "")
        appid = self.valid.get(token)
        if appid is None:
            return self._error(path, 40001, "invalid credential, access_token is invalid")
        if self.expire_token_once:
            self.expire_token_once = False
            del self.valid[token]
            return self._error(path, 42001, "access_token expired")
        return appid

    @staticmethod
    def _expiry_ok(body: dict[str, Any]) -> bool:
        return body.get("expire_type") == 1 and 1 <= body.get("expire_interval", 0) <= 30

    # --- the calls --------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        q = request.query
        appid = q.get("appid", "")
        if q.get("grant_type") != "client_credential" or self.apps.get(appid) != q.get("secret"):
            return self._error("cgi-bin/token", 40013, "invalid appid")
        self.tokens_issued += 1
        self.tokens[appid] = f"wxtoken-{self.tokens_issued}"
        self.valid[self.tokens[appid]] = appid
        return web.json_response({"access_token": self.tokens[appid], "expires_in": 7200})

    async def _mint(self, request: web.Request, path: str, kept: list[dict[str, Any]],
                    answer: Callable[[int], dict[str, str]],
                    valid: Callable[[dict[str, Any]], bool] = lambda body: True,
                    ) -> web.Response:
        """A URL Link or a scheme: one of today's quota, if the body is as documented."""
        caller = await self._caller(request, path)
        if isinstance(caller, web.Response):
            return caller
        body = await request.json()
        if not self._expiry_ok(body) or not valid(body):
            return self._error(path, 40097, "invalid args")
        if self.quota is not None:
            if self.quota <= 0:
                return self._error(path, 45009, "reach max api daily quota limit")
            self.quota -= 1
        kept.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok", **answer(next(self._ids))})

    async def generate_urllink(self, request: web.Request) -> web.Response:
        return await self._mint(request, "wxa/generate_urllink", self.minted,
                                lambda n: {"url_link": self.url_link.format(n=n)})

    async def generatescheme(self, request: web.Request) -> web.Response:
        return await self._mint(
            request, "wxa/generatescheme", self.schemes,
            lambda n: {"openlink": f"weixin://dl/business/?t=fake{n}"},
            lambda body: isinstance(body.get("jump_wxa"), dict))

    async def getwxacodeunlimit(self, request: web.Request) -> web.StreamResponse:
        path = "wxa/getwxacodeunlimit"
        caller = await self._caller(request, path)
        if isinstance(caller, web.Response):
            return caller
        body = await request.json()
        if not _SCENE.fullmatch(str(body.get("scene", ""))):
            return self._error(path, 40169, "invalid length for scene, or the data is not json")
        if body.get("page") not in self.pages:
            return self._error(path, 41030, "invalid page")
        self.codes.append(body)
        return web.Response(body=wxacode_image(body["page"], body["scene"]),
                            content_type="image/png")

    async def getticket(self, request: web.Request) -> web.Response:
        path = "cgi-bin/ticket/getticket"
        caller = await self._caller(request, path)
        if isinstance(caller, web.Response):
            return caller
        if request.query.get("type") != "jsapi":
            return self._error(path, 40097, "invalid args")
        self.tickets_issued += 1
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  "ticket": f"jsapi-ticket-{self.tickets_issued}",
                                  "expires_in": self.ticket_expires_in})

    async def jssdk(self, request: web.Request) -> web.Response:
        # WeChat draws the open tag itself. A tap on it, on a page that called wx.config,
        # and the shopper's confirmation open the mini-program and fire the tag's
        # ``launch`` event; a launch that fails fires ``error`` with an errMsg (开放标签,
        # wx-open-launch-weapp, 事件: launch, error). Here at once, and failing when the
        # page was not configured or a test set window.__wxLaunchFails.
        return web.Response(text=(
            "window.wx={config:function(c){window.__wxConfig=c;},"
            "ready:function(f){window.__wxReady=f;},error:function(f){window.__wxError=f;}};"
            "document.addEventListener('click',function(e){"
            "var t=e.target.closest&&e.target.closest('wx-open-launch-weapp');if(!t)return;"
            "if(window.__wxConfig&&!window.__wxLaunchFails)"
            "t.dispatchEvent(new CustomEvent('launch'));"
            "else t.dispatchEvent(new CustomEvent('error',{detail:{errMsg:'launch:fail'}}));});"),
            content_type="application/javascript")

    @property
    def ticket(self) -> str:
        """The JS-SDK ticket this fake handed out last."""
        return f"jsapi-ticket-{self.tickets_issued}"


# --- fixtures for the WeChat tests (imported by their modules) -------------------------------
@pytest.fixture(name="fake")
async def fake_fixture(aiohttp_server: Any) -> tuple[FakeWeChat, TestServer]:
    """A fake WeChat API on a loopback port, and its server."""
    wechat = FakeWeChat()
    return wechat, await aiohttp_server(wechat.app())


@pytest.fixture(name="gateway")
async def gateway_fixture(aiohttp_client: Any, tmp_path: Path,
                          fake: tuple[FakeWeChat, TestServer]) -> TestClient[Any, Any]:
    """A gateway whose WeChat API (and JS-SDK) is the fake; no background upkeep: the tests
    run it themselves."""
    from gateway.app import create_app

    from .conftest import make_settings

    server = fake[1]
    settings = make_settings(tmp_path, wechat__api_base=str(server.make_url("/")),
                             wechat__timeout_seconds=0.5, wechat__upkeep_interval_seconds=3600,
                             wechat__jssdk_url=str(server.make_url(JSSDK_PATH)))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client

