"""Pinduoduo (拼多多): ``phh_android_version/`` or ``pddmt_ios_version/`` in the User-Agent.

Why these markers: Pinduoduo's web-view appends ``phh_android_version/<v> phh_android_build/..``
on Android and ``pddmt_ios_version/<v>`` (older builds ``phh_ios_version/``) on iOS; no other
app writes them. The corpus has no Pinduoduo rows: these come from the app's own UAs.

As a target: ``goods_id`` (numeric), at ``mobile.yangkeduo.com`` and by the ``pinduoduo://``
scheme.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target

__all__ = ["Pinduoduo"]


class Pinduoduo(Adapter):
    platform = "pinduoduo"
    label = "拼多多"
    ua_markers = ("phh_android_version/", "pddmt_ios_version/", "phh_ios_version/")
    referer_hosts = ("yangkeduo.com", "pinduoduo.com")
    owned_hosts = ("yangkeduo.com", "pinduoduo.com")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("goods_id",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"goods_id": r"[0-9]{5,20}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "goods_id": FieldDoc("商品 ID", "拼多多商品链接里 goods_id= 后面的数字（5–20 位）",
                             "300000000001"),
    }
    # Pinduoduo's web-view opens its own goods pages only.
    opens = frozenset({"pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 13; wv) phh_android_version/7.30.0 phh_android_build/1",
        "Mozilla/5.0 (iPhone) Mobile/15E148 pddmt_ios_version/7.30.0 pddmt_ios_build/1",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://mobile.yangkeduo.com/goods.html?goods_id={target['goods_id']}"

    def app_url(self, target: Target) -> str | None:
        return f"pinduoduo://com.xunmeng.pinduoduo/goods.html?goods_id={target['goods_id']}"
