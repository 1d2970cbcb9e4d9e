"""Xiaohongshu (小红书): ``XiaoHongShu`` or ``discover/<version>`` in the User-Agent.

Why these markers: the app's web-view appends ``discover/<version>`` (its internal name; the
scheme is ``xhsdiscover://``) with ``Resolution/..`` and ``Device/..`` tags, newer builds
``xhsdiscover/<version>``, and some write ``XiaoHongShu``. ``discover/`` must start a word
(or follow ``xhs``): the desktop browser ``WebDiscover/1.259`` ends in it too. The corpus has
no Xiaohongshu rows: these come from the app's own UAs.

As a target: ``item_id``, a 24-hex-digit goods id, at ``xiaohongshu.com/goods-detail/`` and
by ``xhsdiscover://goods_detail/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target

__all__ = ["Xiaohongshu"]


class Xiaohongshu(Adapter):
    platform = "xiaohongshu"
    label = "小红书"
    ua_markers = ("XiaoHongShu", "discover/")
    ua_pattern = r"xiaohongshu|(?<![a-z])(?:xhs)?discover/\d"
    referer_hosts = ("xiaohongshu.com", "xhslink.com")
    owned_hosts = ("xiaohongshu.com", "xhslink.com")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("item_id",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"item_id": r"[0-9a-f]{24}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "item_id": FieldDoc("商品 ID", "小红书商品链接 goods-detail/ 后面的 24 位十六进制字符",
                            "64a0000000000000000000a1"),
    }
    # Xiaohongshu keeps shoppers in its own shop: outside links in notes and chats are blocked.
    opens = frozenset({"xiaohongshu"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 discover/8.30.1 (iPhone; iOS 17.2) NetType/WiFi",
        "Mozilla/5.0 (Linux; Android 13; wv) Resolution/1080*2400 discover/8.30.1 XiaoHongShu",
        "Mozilla/5.0 (iPhone) Mobile/15E148 xhsdiscover/8.40 NetType/WiFi",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://www.xiaohongshu.com/goods-detail/{target['item_id']}"

    def app_url(self, target: Target) -> str | None:
        return f"xhsdiscover://goods_detail/{target['item_id']}"
