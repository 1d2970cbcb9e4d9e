"""JD (京东): the JD app's web-view starts its User-Agent with ``jdapp;``.

Why these markers: the JD app writes ``jdapp;<os>;<version>;`` (JD Lite ``jdltapp;``) at the
start of its User-Agent; nothing else writes ``jdapp;``.

As a target: ``sku`` (numeric), at ``item.m.jd.com`` and by the ``openapp.jdmobile`` scheme.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target, encode

__all__ = ["JD"]


class JD(Adapter):
    platform = "jd"
    label = "京东"
    ua_markers = ("jdapp;", "jdltapp;")
    referer_hosts = ("jd.com", "3.cn")
    owned_hosts = ("jd.com", "3.cn", "jd.hk")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("sku",),)
    field_patterns: ClassVar[Mapping[str, str]] = {"sku": r"[0-9]{4,20}"}
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "sku": FieldDoc("商品 SKU", "京东商品链接 item.jd.com/数字.html 里的数字（4–20 位）",
                        "100012043978"),
    }
    # JD's web-view opens its own items and ordinary web pages; Taobao and the other shops are
    # rivals it does not open in place.
    opens = frozenset({"jd", "web"})
    ua_samples = (
        "jdapp;iPhone;13.2.0;;;M/5.0;appBuild/169370;Mozilla/5.0 (iPhone) Mobile/15E148",
        "jdltapp;android;6.0.0;;;appBuild/2611;Mozilla/5.0 (Linux; Android 13; wv)",
    )

    def web_url(self, target: Target) -> str | None:
        return f"https://item.m.jd.com/product/{target['sku']}.html"

    def app_url(self, target: Target) -> str | None:
        params = json.dumps({"category": "jump", "des": "productDetail", "skuId": target["sku"]},
                            separators=(",", ":"))
        return f"openapp.jdmobile://virtual?params={encode(params)}"
