"""Taobao (淘宝): the Alibaba app whose User-Agent carries ``AliApp(TB/...)``."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Target

__all__ = ["Taobao"]


class Taobao(Adapter):
    platform = "taobao"
    label = "淘宝"
    ua_markers = ("AliApp(TB/",)
    referer_hosts = ("taobao.com", "m.taobao.com")
    owned_hosts = ("taobao.com", "tb.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("item_id",),)
    field_patterns = {"item_id": r"[0-9]{5,20}"}
    opens = frozenset({"taobao", "tmall"})
    blocks_web = True
    ua_samples = ("Mozilla/5.0 (iPhone) AliApp(TB/10.30.0) WindVane/8.7.2",)

    def web_url(self, target: Target) -> str | None:
        return f"https://item.taobao.com/item.htm?id={target['item_id']}"

    def app_url(self, target: Target) -> str | None:
        return f"taobao://item.taobao.com/item.htm?id={target['item_id']}"
