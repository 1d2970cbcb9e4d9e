"""A small fake of WeChat's documented server API (token, generate_urllink) over loopback."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

APPID = "wx0123456789abcdef"
APP_SECRET = "0123456789abcdef0123456789abcdef"


@dataclass
class FakeWeChat:
    tokens_issued: int = 0
    current_token: str = ""
    expire_token_once: bool = False
    fail_with: int | None = None
    delay: float = 0.0
    #: The URL Link answered, ``{n}`` numbering them (a test may make WeChat answer oddly).
    url_link: str = "https://wxaurl.cn/fake{n}"
    minted: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/wxa/generate_urllink", self.generate_urllink)
        return app

    async def token(self, request: web.Request) -> web.Response:
        q = request.query
        if (q.get("grant_type"), q.get("appid"), q.get("secret")) != (
                "client_credential", APPID, APP_SECRET):
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        self.tokens_issued += 1
        self.current_token = f"wxtoken-{self.tokens_issued}"
        return web.json_response({"access_token": self.current_token, "expires_in": 7200})

    async def generate_urllink(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            return web.json_response({"errcode": self.fail_with, "errmsg": "refused"})
        if request.query.get("access_token") != self.current_token:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if self.expire_token_once:
            self.expire_token_once = False
            self.current_token = "expired"
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        body = await request.json()
        if body.get("expire_type") != 1 or not 1 <= body.get("expire_interval", 0) <= 30:
            return web.json_response({"errcode": 40097, "errmsg": "invalid args"})
        self.minted.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  "url_link": self.url_link.format(n=next(self._ids))})
