"""JD (京东): the JD app's web-view carries ``jdapp;`` at the start of its User-Agent."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Target

__all__ = ["JD"]


class JD(Adapter):
    platform = "jd"
    label = "京东"
    ua_markers = ("jdapp;",)
    referer_hosts = ("jd.com",)
    owned_hosts = ("jd.com", "3.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("sku",),)
    field_patterns = {"sku": r"[0-9]{4,20}"}
    opens = frozenset({"jd", "web"})
    ua_samples = ("jdapp;iPhone;12.1.0;;;M/5.0;appBuild/168960;Mozilla/5.0 (iPhone)",)

    def web_url(self, target: Target) -> str | None:
        return f"https://item.m.jd.com/product/{target['sku']}.html"
