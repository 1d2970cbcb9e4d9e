"""A small client for the WeCom server API calls LinkLoop makes.

One shared ``aiohttp.ClientSession``; the base URL comes from settings. Access tokens are
cached per corp until five minutes before WeCom says they expire. An expired or invalid
token is refreshed once and the call retried; a rate-limit answer backs off and retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from ..platform_api import JsonApi, PlatformApiError, TokenCache

__all__ = ["WeComApiError", "WeComClient"]

log = structlog.get_logger("linkloop.wecom")

# errcodes that mean "this access token is no good": refresh and retry once.
_TOKEN_ERRORS = frozenset({40014, 42001, 40082})
# errcodes that mean "slow down" or "busy": back off and retry.
_RETRY_ERRORS = frozenset({45009, 45033, -1})
_RETRIES = 3


class WeComApiError(PlatformApiError):
    """WeCom refused a call (``errcode``) or could not be reached (``errcode`` None)."""


class WeComClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._api = JsonApi(session, base_url, timeout, WeComApiError)
        self._tokens = TokenCache()

    async def access_token(self, corp_id: str, secret: str, *, refresh: bool = False) -> str:
        async def fetch() -> tuple[str, int]:
            data = await self._api.request("GET", "gettoken",
                                           {"corpid": corp_id, "corpsecret": secret})
            if data.get("errcode", 0) != 0 or not data.get("access_token"):
                raise WeComApiError(f"gettoken: {data.get('errmsg', 'no token')}",
                                    data.get("errcode"))
            return (self._api.text("gettoken", data, "access_token"),
                    self._api.seconds("gettoken", data, "expires_in", 7200))

        return await self._tokens.get((corp_id, secret), fetch, refresh=refresh)

    async def call(self, corp_id: str, secret: str, path: str,
                   body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` with a valid token; the answer with errcode 0."""
        refreshed = False
        delay = 0.2
        for attempt in range(_RETRIES + 1):
            token = await self.access_token(corp_id, secret)
            data = await self._api.request("POST", path, {"access_token": token}, body)
            errcode = data.get("errcode") or 0  # an int or None (JsonApi checked)
            if errcode == 0:
                return data
            if errcode in _TOKEN_ERRORS and not refreshed:
                refreshed = True
                await self.access_token(corp_id, secret, refresh=True)
                continue
            if errcode in _RETRY_ERRORS and attempt < _RETRIES:
                log.warning("wecom.backoff", path=path, errcode=errcode, delay=delay)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            raise WeComApiError(f"{path}: {data.get('errmsg', 'error')}", errcode)
        raise WeComApiError(f"{path}: gave up after {_RETRIES} retries")

    # --- the calls LinkLoop makes ------------------------------------------------------------
    async def add_contact_way(self, corp_id: str, secret: str, *, users: list[str],
                              state: str, remark: str) -> tuple[str, str]:
        """A "contact me" QR for ``users`` carrying ``state``: (config_id, qr_code)."""
        data = await self.call(corp_id, secret, "externalcontact/add_contact_way", {
            "type": 1 if len(users) == 1 else 2, "scene": 2, "state": state,
            "user": users, "remark": remark[:30], "skip_verify": True})
        path = "externalcontact/add_contact_way"
        return self._api.text(path, data, "config_id"), self._api.text(path, data, "qr_code")

    async def add_join_way(self, corp_id: str, secret: str, *, chat_ids: list[str],
                           state: str, remark: str) -> tuple[str, str]:
        """A "join group" QR for ``chat_ids`` carrying ``state``: (config_id, qr_code)."""
        data = await self.call(corp_id, secret, "externalcontact/groupchat/add_join_way", {
            "scene": 2, "chat_id_list": chat_ids, "state": state, "remark": remark[:30],
            "auto_create_room": 1})
        config_id = self._api.text("externalcontact/groupchat/add_join_way", data, "config_id")
        way = await self.call(corp_id, secret, "externalcontact/groupchat/get_join_way",
                              {"config_id": config_id})
        return config_id, self._api.text("externalcontact/groupchat/get_join_way", way,
                                         "join_way", "qr_code")

    async def follow_users(self, corp_id: str, secret: str) -> list[str]:
        """Members allowed to have customer contacts (客户联系), by user id.

        ``GET externalcontact/get_follow_user_list``: ``{"errcode": 0, "follow_user":
        ["zhangsan", ...]}``. Source: 获取配置了客户联系功能的成员列表,
        https://developer.work.weixin.qq.com/document/path/92571
        """
        token = await self.access_token(corp_id, secret)
        data = await self._api.request("GET", "externalcontact/get_follow_user_list",
                                       {"access_token": token})
        errcode = data.get("errcode") or 0  # an int or None (JsonApi checked)
        if errcode:
            raise WeComApiError(f"get_follow_user_list: {data.get('errmsg', 'error')}", errcode)
        return [str(u) for u in data.get("follow_user", []) if isinstance(u, str)]

    async def group_members(self, corp_id: str, secret: str,
                            chat_id: str) -> list[dict[str, Any]]:
        data = await self.call(corp_id, secret, "externalcontact/groupchat/get",
                               {"chat_id": chat_id, "need_name": 0})
        chat = data.get("group_chat")
        members = chat.get("member_list") if isinstance(chat, dict) else None
        if not isinstance(members, list):  # garbage: retried like any failed call
            raise WeComApiError("externalcontact/groupchat/get: the answer has no "
                                "group_chat.member_list")
        return [m for m in members if isinstance(m, dict)]
