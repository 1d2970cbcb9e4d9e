"""A plain browser, and any product page on the merchant's own web store.

As a place: the fallback. It claims nothing by marker; detection lands here when no app
claims the User-Agent: Safari, Chrome, the standalone QQ Browser (``MQQBrowser`` without
``QQ/``), UC, Quark, vendor browsers, and overseas apps (TikTok, Kwai) that are none of the
contract's platforms.

As a target: ``url``, https on one of the merchant's own domains (or their subdomains).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import Adapter, FieldDoc, Target, check_url

__all__ = ["Web"]


class Web(Adapter):
    platform = "web"
    label = "网页商城"
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("url",),)
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "url": FieldDoc("商品网址", "https 开头，必须在你店铺的域名上",
                        "https://shop.example.com/item/42"),
    }
    # A browser opens every storefront: web URLs directly, apps and mini-programs by scheme.
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo", "douyin", "kuaishou",
                       "xiaohongshu", "wechat_miniprogram", "alipay"})
    # Fragments the detector must leave on plain web (the no-overlap test checks them).
    ua_samples = (
        "Mozilla/5.0 (iPhone) Version/17.2 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 13) Chrome/120.0 MQQBrowser/14.2 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 Safari/537.36 QQBrowser/12.3",
        "Mozilla/5.0 (iPhone) Mobile/15E148 musical_ly_32.5.0 JsSdk/2.0 BytedanceWebview/1",
        "Mozilla/5.0 (Linux; Android 13; wv) trill_320500 JsSdk/1.0 AppName/trill",
        "Mozilla/5.0 (Linux; Android 13; wv) Yoda/oversea-3.1 Kwai_Pro/11.2.40 NetType/WIFI",
        "Mozilla/5.0 (Linux; Android 13; wv) Quark/6.9.0 UCBrowser/16.1 Mobile Safari/537.36",
    )

    def claims(self, user_agent: str) -> bool:
        return False

    def claims_lowered(self, lowered: str) -> bool:
        return False

    def check_url(self, url: str, field: str, web_domains: tuple[str, ...]) -> str:
        # A web target must live on one of the merchant's own domains: never anyone else's.
        return check_url(url, field, web_domains)

    def web_url(self, target: Target) -> str | None:
        return target.get("url")
