"""Tmall (天猫): ``AliApp(TM/`` in the User-Agent, or ``TMIOS/`` / ``@tmall_`` on iOS.

Why these markers: Alibaba apps share ``AliApp(<code>/<version>)``; ``TM`` is Tmall. The iOS
client also writes ``TMIOS/<version>`` and a ``TTID/..@tmall_iphone`` channel tag. ``TB``
(Taobao) and ``AP`` (Alipay) are other adapters.

As a target: ``item_id`` (numeric, the same id space as Taobao).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target

__all__ = ["Tmall"]


class Tmall(Adapter):
    platform = "tmall"
    label = "天猫"
    ua_markers = ("AliApp(TM/", "TMIOS/", "@tmall_")
    referer_hosts = ("tmall.com", "tmall.hk")
    # Tmall share links come as m.tb.cn short links as well as tmall.com pages.
    owned_hosts = ("tmall.com", "tmall.hk", "tb.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("item_id",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"item_id": r"[0-9]{5,20}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "item_id": FieldDoc("商品 ID", "天猫商品链接里 id= 后面的数字（5–20 位）", "600000000002"),
        "share_token": FieldDoc("淘口令（可选）", "天猫「分享」复制的口令，顾客可复制到天猫打开",
                                "￥XyZ789￥"),
    }
    # Like Taobao: Alibaba's shopping apps open Taobao and Tmall items and block the rest.
    opens = frozenset({"taobao", "tmall"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 13) AliApp(TM/15.10.0) WindVane/8.5.0 1080X2340",
        "Mozilla/5.0 (iPhone) Mobile/15E148 TMIOS/15.10.0 TTID/201200@tmall_iphone_15.10",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://detail.tmall.com/item.htm?id={target['item_id']}"

    def app_url(self, target: Target) -> str | None:
        return f"tmall://page.tm/itemDetail?id={target['item_id']}"
