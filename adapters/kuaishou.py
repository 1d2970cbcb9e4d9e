"""Kuaishou (快手): ``Kwai/``, ``KsWebView/`` or ``ksNebula/`` in the User-Agent; never Kwai.

Why these markers: Kuaishou's web-view writes ``Kwai/<version>`` (iOS) or ``KsWebView/``
(Android); Kuaishou Lite (极速版) writes ``ksNebula/``. The overseas app Kwai writes
``Kwai_Pro/`` and ``Yoda/oversea``: those veto a match, and Kwai is plain web.

As a target: a Kuaishou shop item (``item_id``, numeric), whose page on ``kwaixiaodian.com``
Kuaishou opens natively.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target

__all__ = ["Kuaishou"]


class Kuaishou(Adapter):
    platform = "kuaishou"
    label = "快手"
    ua_markers = ("Kwai/", "KsWebView/", "ksNebula/")
    ua_excludes = ("Kwai_Pro", "Kwai_Lite", "Yoda/oversea")
    referer_hosts = ("kuaishou.com", "gifshow.com", "chenzhongtech.com", "kwaixiaodian.com")
    owned_hosts = ("kuaishou.com", "gifshow.com", "chenzhongtech.com", "kwaixiaodian.com")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("item_id",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"item_id": r"[0-9]{5,24}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "item_id": FieldDoc("快手小店商品 ID", "快手小店商品链接里的数字 ID（5–24 位）",
                            "20000000001"),
    }
    # Like Douyin, Kuaishou cut outside shop links in 2020: its own shop only.
    opens = frozenset({"kuaishou"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 Kwai/12.1.20.7360 Yoda/3.0.3 WebViewType/WK",
        "Mozilla/5.0 (Linux; Android 13; wv) Yoda/3.2.9 KsWebView/1.8.90.733",
        "Mozilla/5.0 (Linux; Android 13; wv) Yoda/3.2.9 ksNebula/12.1.20.7360",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://app.kwaixiaodian.com/merchant/shop/detail?id={target['item_id']}"
