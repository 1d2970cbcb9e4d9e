"""Douyin (抖音): ``aweme`` in the User-Agent; never TikTok.

Why these markers: Douyin's web-view writes ``aweme_<version>`` and ``AppName/aweme`` (iOS
also ``aweme/<version>``); Douyin Lite writes ``douyin_lite``. The ByteDance engine markers
(``BytedanceWebview``, ``TTWebView``, ``JsSdk``, ``ByteLocale``) are shared with Toutiao,
TikTok and Feishu and are never used. TikTok (``musical_ly``, ``trill``, ``TikTok``, TikTok
Lite's ``ultralite``) is an overseas app: those tokens veto a match, and TikTok is plain web.

As a target: a Douyin shop product (``product_id``, numeric) reached at
``haohuo.jinritemai.com``, or a Douyin mini-program (``appid`` = ``tt`` + 16 hex, ``path``).

For a mini-program Douyin documents one link: the URL Link ``https://z.douyin.com/...`` its
server API mints ("生成能够直接跳转到端内小程序的 url link", 生成 Link V2,
https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/url-and-qrcode/link/url-link-generate);
a merchant who has one gives it as ``url`` (``douyin.com`` is Douyin's host) and it is used
first, everywhere. Without it the gateway falls back to the app scheme
``snssdk1128://microapp?app_id=..&start_page=..``, which Douyin uses but does not document
(its own forum: "未找到文档说明"), so it is offered only on a phone: inside Douyin, and from
a phone browser through the launch page (gateway/resolve.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import MINI_PATH_PATTERN, Adapter, FieldDoc, Target, encode, strip_mini_program_fields

__all__ = ["Douyin"]


class Douyin(Adapter):
    platform = "douyin"
    label = "抖音"
    ua_markers = ("aweme", "douyin_lite")
    ua_excludes = ("musical_ly", "trill_", "tiktok", "ultralite")
    referer_hosts = ("douyin.com", "iesdouyin.com", "jinritemai.com")
    owned_hosts = ("douyin.com", "iesdouyin.com", "jinritemai.com")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("product_id",), ("appid", "path"))
    field_patterns: ClassVar[Mapping[str, str]] = {
        "product_id": r"[0-9]{8,24}",
        "appid": r"tt[0-9a-f]{16}",
        "path": MINI_PATH_PATTERN,
    }
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "product_id": FieldDoc("抖店商品 ID", "抖店商品链接里 id= 后面的数字（8–24 位）",
                               "3500000000000000001"),
        "appid": FieldDoc("抖音小程序 AppID", "tt 开头，后跟 16 位十六进制字符",
                          "tt0123456789abcdef"),
        "path": FieldDoc("小程序页面路径", "已发布的页面路径，不带 ? 和参数", "pages/item/index"),
    }
    # Since 2020 Douyin cuts outside shop links ("断外链"): it opens its own shop and its
    # mini-programs, and blocks web pages, Taobao, JD and the rest.
    opens = frozenset({"douyin"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 14; wv) aweme_300100 JsSdk/1.0 AppName/aweme ByteLocale/zh",
        "Mozilla/5.0 (iPhone) Mobile/15E148 aweme_30.1.0 JsSdk/2.0 BytedanceWebview/d8a21c6",
        "Mozilla/5.0 (Linux; Android 14; wv) douyin_lite_300 JsSdk/1.0 NetType/WIFI",
    )

    def normalize(self, target: Target) -> Target:
        return strip_mini_program_fields(target, "path")

    def is_mini_program(self, target: Target) -> bool:
        return "appid" in target

    def web_url(self, target: Target) -> str | None:
        if "product_id" in target:
            return f"https://haohuo.jinritemai.com/views/product/detail?id={target['product_id']}"
        return None

    def app_url(self, target: Target) -> str | None:
        # Only the mini-program has a documented scheme; a shop product is its web page,
        # which Douyin opens natively.
        if "appid" in target:
            return (f"snssdk1128://microapp?app_id={target['appid']}&version=v2&scene=0"
                    f"&start_page={encode(target['path'])}")
        return None
