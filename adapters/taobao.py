"""Taobao (淘宝): the Alibaba app whose User-Agent carries ``AliApp(TB/...)``.

Why this marker: Alibaba apps share ``AliApp(<code>/<version>)`` and the ``WindVane`` engine;
``TB`` is Taobao, ``TB-PD`` Taobao for the iPad (淘宝HD). Neither ``WindVane`` nor a
``TTID/..@taobao_`` tag alone is used: other apps embed Taobao's SDK (Weibo's web-view
carries ``WindVane``).

As a target: ``item_id`` (numeric). A Taobao 口令 goes in ``share_token``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target

__all__ = ["Taobao"]


class Taobao(Adapter):
    platform = "taobao"
    label = "淘宝"
    ua_markers = ("AliApp(TB/", "AliApp(TB-PD/")
    referer_hosts = ("taobao.com", "tb.cn")
    owned_hosts = ("taobao.com", "tb.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("item_id",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"item_id": r"[0-9]{5,20}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "item_id": FieldDoc("商品 ID", "淘宝商品链接里 id= 后面的数字（5–20 位）", "600000000001"),
        "share_token": FieldDoc("淘口令（可选）", "淘宝「分享」复制的口令，顾客可复制到淘宝打开",
                                "￥AbC123￥"),
    }
    # Taobao opens its own and Tmall items; outside web links and other shops are blocked.
    opens = frozenset({"taobao", "tmall"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(TB/10.30.0) WindVane/8.7.2 1170x2532",
        "Mozilla/5.0 (Linux; Android 13) AliApp(TB/10.30.0) UCBS/3.22 WindVane/8.5.0",
        "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Mobile/15E148 AliApp(TB-PD/5.0.0)",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://item.taobao.com/item.htm?id={target['item_id']}"

    def app_url(self, target: Target) -> str | None:
        return f"taobao://item.taobao.com/item.htm?id={target['item_id']}"
