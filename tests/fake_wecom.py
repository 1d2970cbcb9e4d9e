"""A small fake of WeCom's documented server API, served over loopback for tests.

It implements ``gettoken``, ``externalcontact/get_follow_user_list``,
``externalcontact/add_contact_way``,
``externalcontact/groupchat/add_join_way``, ``get_join_way`` and ``groupchat/get`` with
WeCom's JSON shapes and errcodes, and plays WeCom's other half: posting encrypted,
signed callbacks to the gateway when a shopper adds a contact or joins a group, when a
contact first chats or is deleted, and when the 获客助手 acquisition link or its quota
needs the merchant.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway.wecom.crypto import WeComCrypto

CORP_ID = "ww0123456789abcdef"
SECRET = "fake-app-secret-0123456789"
CALLBACK_TOKEN = "LinkLoopToken42"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@dataclass
class FakeWeCom:
    """State a test can read and knobs it can turn."""

    tokens_issued: int = 0
    current_token: str = ""
    #: The next API call answers 42001 (token expired) once.
    expire_token_once: bool = False
    #: The next API call answers 45009 (rate limited) this many times.
    rate_limit: int = 0
    #: Every API call answers this errcode (e.g. 60011, no privilege) while set.
    fail_with: int | None = None
    #: Seconds every API call waits before answering (to test timeouts).
    delay: float = 0.0
    #: While set, every API call but gettoken answers this instead, with status 200: JSON,
    #: or a text a proxy or a broken server sends (garbage).
    garbage: Any = None
    #: The same for gettoken.
    token_garbage: Any = None
    #: Members with customer-contact permission (get_follow_user_list).
    follow_users: list[str] = field(default_factory=lambda: ["zhangsan", "lisi"])
    contact_ways: dict[str, dict[str, Any]] = field(default_factory=dict)
    join_ways: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- the API --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self.gettoken)
        app.router.add_post("/cgi-bin/externalcontact/add_contact_way", self.add_contact_way)
        app.router.add_post("/cgi-bin/externalcontact/groupchat/add_join_way",
                            self.add_join_way)
        app.router.add_post("/cgi-bin/externalcontact/groupchat/get_join_way",
                            self.get_join_way)
        app.router.add_post("/cgi-bin/externalcontact/groupchat/get", self.group_get)
        app.router.add_get("/cgi-bin/externalcontact/get_follow_user_list",
                           self.get_follow_user_list)
        return app

    async def gettoken(self, request: web.Request) -> web.Response:
        self.calls.append("gettoken")
        if self.token_garbage is not None:
            return _answer(self.token_garbage)
        if (request.query.get("corpid"), request.query.get("corpsecret")) != (CORP_ID, SECRET):
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        self.tokens_issued += 1
        self.current_token = f"token-{self.tokens_issued}"
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  "access_token": self.current_token, "expires_in": 7200})

    async def get_follow_user_list(self, request: web.Request) -> web.Response:
        self.calls.append("get_follow_user_list")
        if self.fail_with is not None:
            return web.json_response({"errcode": self.fail_with, "errmsg": "refused"})
        if request.query.get("access_token") != self.current_token:
            return web.json_response({"errcode": 40014, "errmsg": "invalid access_token"})
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  "follow_user": self.follow_users})

    async def _guard(self, request: web.Request, name: str) -> dict[str, Any] | web.Response:
        self.calls.append(name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.garbage is not None:
            return _answer(self.garbage)
        if self.fail_with is not None:
            return web.json_response({"errcode": self.fail_with, "errmsg": "refused"})
        if request.query.get("access_token") != self.current_token:
            return web.json_response({"errcode": 40014, "errmsg": "invalid access_token"})
        if self.expire_token_once:
            self.expire_token_once = False
            self.current_token = "expired"
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        if self.rate_limit:
            self.rate_limit -= 1
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        body: dict[str, Any] = await request.json()
        return body

    async def add_contact_way(self, request: web.Request) -> web.Response:
        body = await self._guard(request, "add_contact_way")
        if isinstance(body, web.Response):
            return body
        if len(body.get("state", "")) > 30 or body.get("scene") not in (1, 2):
            return web.json_response({"errcode": 40058, "errmsg": "invalid parameter"})
        config_id = f"cw{next(self._ids)}"
        self.contact_ways[config_id] = body
        return web.json_response({"errcode": 0, "errmsg": "ok", "config_id": config_id,
                                  "qr_code": f"https://wework.qpic.cn/fake/{config_id}.png"})

    async def add_join_way(self, request: web.Request) -> web.Response:
        body = await self._guard(request, "add_join_way")
        if isinstance(body, web.Response):
            return body
        if len(body.get("state", "")) > 30 or not body.get("chat_id_list"):
            return web.json_response({"errcode": 40058, "errmsg": "invalid parameter"})
        config_id = f"jw{next(self._ids)}"
        self.join_ways[config_id] = body
        return web.json_response({"errcode": 0, "errmsg": "ok", "config_id": config_id})

    async def get_join_way(self, request: web.Request) -> web.Response:
        body = await self._guard(request, "get_join_way")
        if isinstance(body, web.Response):
            return body
        way = self.join_ways.get(body.get("config_id", ""))
        if way is None:
            return web.json_response({"errcode": 41044, "errmsg": "invalid config_id"})
        return web.json_response({"errcode": 0, "errmsg": "ok", "join_way": {
            "config_id": body["config_id"], "scene": 2, "state": way["state"],
            "chat_id_list": way["chat_id_list"],
            "qr_code": f"https://wework.qpic.cn/fake/{body['config_id']}.png"}})

    async def group_get(self, request: web.Request) -> web.Response:
        body = await self._guard(request, "groupchat_get")
        if isinstance(body, web.Response):
            return body
        members = self.groups.get(body.get("chat_id", ""))
        if members is None:
            return web.json_response({"errcode": 40050, "errmsg": "invalid chatid"})
        return web.json_response({"errcode": 0, "errmsg": "ok", "group_chat": {
            "chat_id": body["chat_id"], "owner": "zhangsan",
            "member_list": [{"userid": "zhangsan", "type": 1, "join_time": 1, "join_scene": 1},
                            *members]}})

    # --- WeCom's other half: callbacks ----------------------------------------------------
    @staticmethod
    def envelope(message: str, *, corp_id: str = CORP_ID, token: str = CALLBACK_TOKEN,
                 timestamp: int | None = None, nonce: str | None = None,
                 ) -> tuple[dict[str, str], str]:
        """Query parameters and XML body of one encrypted, signed callback."""
        crypto = WeComCrypto(token, AES_KEY, corp_id)
        encrypt = crypto.encrypt(message)
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or str(time.time_ns())
        params = {"msg_signature": crypto.sign(ts, nonce, encrypt), "timestamp": ts,
                  "nonce": nonce}
        body = (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID>1000002</AgentID></xml>")
        return params, body

    @staticmethod
    def add_contact_event(state: str | None, external_userid: str, user: str = "zhangsan",
                          ) -> str:
        state_xml = f"<State><![CDATA[{state}]]></State>" if state is not None else ""
        return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
                "<FromUserName><![CDATA[sys]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime>"
                "<MsgType><![CDATA[event]]></MsgType>"
                "<Event><![CDATA[change_external_contact]]></Event>"
                "<ChangeType><![CDATA[add_external_contact]]></ChangeType>"
                f"<UserID><![CDATA[{user}]]></UserID>"
                f"<ExternalUserID><![CDATA[{external_userid}]]></ExternalUserID>"
                f"{state_xml}<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>")

    @staticmethod
    def _event(event: str, change: str, fields: dict[str, str | int]) -> str:
        body = "".join(f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>"
                       for k, v in fields.items())
        return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
                "<FromUserName><![CDATA[sys]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime>"
                "<MsgType><![CDATA[event]]></MsgType>"
                f"<Event><![CDATA[{event}]]></Event>"
                f"<ChangeType><![CDATA[{change}]]></ChangeType>{body}</xml>")

    @staticmethod
    def customer_acquisition_event(change: str, **fields: str | int) -> str:
        """A 获客助手 event (WeCom doc 获客助手事件通知, path/97299): ``customer_start_chat``
        with UserID, ExternalUserID and LinkId; ``balance_low``, ``balance_exhausted`` with
        nothing more; ``quota_expire_soon`` with ExpireTime and ExpireQuotaNum;
        ``link_unavailable`` and ``delete_link`` with LinkId."""
        return FakeWeCom._event("customer_acquisition", change, fields)

    @staticmethod
    def contact_deleted_event(change: str, external_userid: str, user: str = "zhangsan",
                              ) -> str:
        """``del_external_contact`` (the member deleted the customer) or ``del_follow_user``
        (the customer deleted the member), WeCom doc 事件格式 (path/92130)."""
        fields: dict[str, str | int] = {"UserID": user, "ExternalUserID": external_userid}
        if change == "del_external_contact":
            fields["Source"] = "DELETE_BY_TRANSFER"
        return FakeWeCom._event("change_external_contact", change, fields)

    def join_group(self, chat_id: str, userid: str, state: str | None) -> str:
        """A shopper joins through a join way: the member list grows, the event is made."""
        member: dict[str, Any] = {"userid": userid, "type": 2, "join_time": int(time.time()),
                                  "join_scene": 3}
        if state is not None:
            member["state"] = state
        self.groups.setdefault(chat_id, []).append(member)
        return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
                "<FromUserName><![CDATA[sys]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime>"
                "<MsgType><![CDATA[event]]></MsgType>"
                "<Event><![CDATA[change_external_chat]]></Event>"
                f"<ChatId><![CDATA[{chat_id}]]></ChatId>"
                "<ChangeType><![CDATA[update]]></ChangeType>"
                "<UpdateDetail><![CDATA[add_member]]></UpdateDetail>"
                "<JoinScene>3</JoinScene><MemChangeCnt>1</MemChangeCnt>"
                f"<MemChangeList><Item>{userid}</Item></MemChangeList></xml>")

    @staticmethod
    async def post(session: aiohttp.ClientSession, callback_url: str,
                   message: str, **envelope: Any) -> aiohttp.ClientResponse:
        params, body = FakeWeCom.envelope(message, **envelope)
        resp = await session.post(callback_url, params=params, data=body,
                                  headers={"Content-Type": "text/xml"})
        await resp.read()
        return resp


def _answer(body: Any) -> web.Response:
    """``body`` as JSON, or a text as it is (an HTML error page: not JSON at all)."""
    if isinstance(body, str):
        return web.Response(text=body, content_type="text/html")
    return web.json_response(body)
