"""Checking a merchant's WeCom entry point against WeCom itself, for the console's button
and ``POST /api/entry/check``.

Each step calls WeCom through the configured ``wecom.api_base`` (the same client the
``/e/`` hop uses) and says what came back, errcode and errmsg as WeCom wrote them, and what
it means for the merchant. A step never shows a secret or an access token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..store import Entry
from .client import WeComApiError, WeComClient

__all__ = ["Step", "check_entry"]

#: Most groups looked up in one check: each is a call of its own.
_MAX_GROUPS = 5
# errcodes a merchant meets when setting up, and what to do. Source: 全局错误码,
# https://developer.work.weixin.qq.com/document/path/90313 (40013 "需确认CorpID是否填写正确",
# 40050 "chatid不存在", 48002 "API接口无权限调用", 60011 "指定的成员/部门/标签参数无权限").
_HINTS = {
    40001: "secret 不对：请到企业微信管理后台「客户联系 → API」复制 Secret",
    40013: "corp_id 不对：请到管理后台「我的企业」复制企业 ID",
    41002: "缺少 corp_id",
    41004: "缺少 secret",
    48002: "这个应用没有接口权限：请把它配置到「客户联系 → 可调用接口的应用」，并把本服务器的 "
           "IP 加入应用的企业可信 IP",
    60011: "没有权限：应用的可见范围不包含这些成员",
    40050: "群 ID 不存在：请确认是客户群的 chat_id",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One call (or one look at the settings) and what it found."""

    name: str
    ok: bool
    #: What a merchant reads: what was found and, when not ok, what to do.
    message: str
    #: WeCom's own answer, when a call was made: errcode and errmsg.
    errcode: int | None = None
    errmsg: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _failed(name: str, exc: WeComApiError, doing: str) -> Step:
    if exc.errcode is None:
        return Step(name, False, f"{doing}失败：连不上企业微信（{exc}）。请检查网络和 "
                                 "wecom.api_base 设置。", None, str(exc))
    hint = _HINTS.get(exc.errcode, "请对照企业微信全局错误码说明处理")
    return Step(name, False, f"{doing}失败：{hint}。", exc.errcode, str(exc))


async def check_entry(client: WeComClient, entry: Entry) -> list[Step]:
    """Every check that applies to this entry, in order; later calls only after a token."""
    steps = []
    callbacks = {"callback_token", "encoding_aes_key"} <= set(entry.secrets)
    steps.append(Step(
        "callback", callbacks,
        "回调已配置：顾客添加企业微信后，添加数会记到对应的商品和平台。" if callbacks else
        "还没有配置回调（Token 和 EncodingAESKey）：可以引流，但统计不到添加数。"))
    corp, secret = entry.secrets.get("corp_id"), entry.secrets.get("secret")
    if not corp or not secret:
        needed = entry.kind in ("contact_way", "group")
        steps.append(Step("gettoken", not needed,
                          "没有填写 corp_id 和 secret，" + (
                              "无法生成「联系我」和入群二维码。" if needed
                              else "跳过接口检查（这种入口不需要调用企业微信接口）。")))
        return steps
    try:
        await client.access_token(corp, secret, refresh=True)
    except WeComApiError as exc:
        steps.append(_failed("gettoken", exc, "获取 access_token "))
        return steps
    steps.append(Step("gettoken", True, "corp_id 和 secret 正确，已拿到 access_token。", 0, "ok"))
    if entry.kind == "contact_way":
        steps.append(await _check_users(client, corp, secret, list(entry.config["users"])))
    elif entry.kind == "group":
        for chat_id in list(entry.config["chat_ids"])[:_MAX_GROUPS]:
            steps.append(await _check_group(client, corp, secret, chat_id))
    return steps


async def _check_users(client: WeComClient, corp: str, secret: str, users: list[str]) -> Step:
    try:
        allowed = set(await client.follow_users(corp, secret))
    except WeComApiError as exc:
        return _failed("follow_users", exc, "读取客户联系成员 ")
    missing = [u for u in users if u not in allowed]
    if missing:
        return Step("follow_users", False,
                    f"这些成员没有客户联系权限，顾客扫码加不上：{'、'.join(missing)}。"
                    "请在管理后台「客户联系 → 权限配置」里添加。", 0, "ok")
    return Step("follow_users", True, f"{len(users)} 位成员都有客户联系权限。", 0, "ok")


async def _check_group(client: WeComClient, corp: str, secret: str, chat_id: str) -> Step:
    try:
        members = await client.group_members(corp, secret, chat_id)
    except WeComApiError as exc:
        return _failed(f"group:{chat_id}", exc, f"读取群 {chat_id} ")
    return Step(f"group:{chat_id}", True, f"群 {chat_id} 可用，现有 {len(members)} 人。", 0, "ok")
