"""A plain browser, and any product page on the merchant's own web store."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Target, check_https_url

__all__ = ["Web"]


class Web(Adapter):
    platform = "web"
    label = "网页商城"
    # The fallback: it claims nothing by marker; detection lands here when nothing else does.
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("url",),)
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo", "douyin", "kuaishou",
                       "xiaohongshu", "wechat_miniprogram", "alipay"})

    def claims(self, user_agent: str) -> bool:
        return False

    def check_url(self, url: str, field: str, web_domains: tuple[str, ...]) -> str:
        # A web target must live on one of the merchant's own domains: never anyone else's.
        return check_https_url(url, field, web_domains)

    def web_url(self, target: Target) -> str | None:
        return target.get("url")
