"""Alerts: what the merchant must act on, e.g. their WeCom acquisition link out of quota.

WeCom tells us through 获客助手 events (``Event=customer_acquisition``, WeCom doc
获客助手事件通知, path/97299); the callback worker keeps each as an alert (logged too), and
marketing and merchant staff read them at ``GET /api/alerts`` and on the dashboard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .api import principal
from .appkeys import STORE
from .errors import guarded
from .jsonout import json_response
from .params import IntParam
from .store import Alert

__all__ = ["ALERT_DAYS", "ALERT_KINDS", "AlertKind", "alert_json", "recent_alerts", "setup_routes"]

#: How far back ``GET /api/alerts`` and the dashboard look by default, and at most.
DEFAULT_DAYS = 30
MAX_DAYS = 366
_LIMIT = 100


@dataclass(frozen=True, slots=True)
class AlertKind:
    #: ``critical``: shoppers can't reach the merchant now; ``warning``: soon.
    severity: str
    #: What happened and what to do, for the dashboard (Chinese, like the rest of it).
    message: str


#: The 获客助手 ChangeTypes that become alerts (WeCom doc path/97299).
ALERT_KINDS: dict[str, AlertKind] = {
    "balance_low": AlertKind(
        "warning", "获客助手的使用量已不足 20 次，请尽快在企业微信管理后台购买或分配额度。"),
    "balance_exhausted": AlertKind(
        "critical", "获客助手的使用量已用完：顾客现在无法通过获客链接添加企业微信。"
                    "请在企业微信管理后台购买额度。"),
    "quota_expire_soon": AlertKind(
        "warning", "获客助手的部分使用量即将过期，请在过期前用完或留意续费。"),
    "link_unavailable": AlertKind(
        "critical", "获客链接已不可用：顾客点击后无法添加企业微信。"
                    "请在企业微信管理后台检查该链接，或在本系统换一个入口链接。"),
    "delete_link": AlertKind(
        "critical", "获客链接已在企业微信中被删除：顾客点击后无法添加企业微信。"
                    "请在本系统设置新的获客链接。"),
}


def alert_json(alert: Alert) -> dict[str, Any]:
    kind = ALERT_KINDS.get(alert.kind, AlertKind("warning", alert.kind))
    return {"id": alert.id, "kind": alert.kind, "severity": kind.severity,
            "message": kind.message, "detail": dict(alert.detail),
            "created_at": datetime.fromtimestamp(alert.created_at, UTC).isoformat()}


async def recent_alerts(app: web.Application, merchant_id: str,
                        days: int = DEFAULT_DAYS) -> list[dict[str, Any]]:
    found = await app[STORE].list_alerts(merchant_id, since=time.time() - days * 86400,
                                         limit=_LIMIT)
    return [alert_json(a) for a in found]


#: ``?days=``, read through an object that also describes it (gateway/openapi.py).
ALERT_DAYS = IntParam("days", "How many days back.", default=DEFAULT_DAYS, minimum=1,
                      maximum=MAX_DAYS)


async def list_alerts(request: web.Request) -> web.Response:
    """``GET /api/alerts[?days=30]``: the merchant's alerts, newest first (any role)."""
    who = principal(request)
    days = ALERT_DAYS.parse(request)
    return json_response({"days": days,
                          "alerts": await recent_alerts(request.app, who.merchant_id, days)})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/alerts", guarded(list_alerts))
