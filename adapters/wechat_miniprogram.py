"""A WeChat mini-program (微信小程序): a target, and a place a shopper can be in.

As a place: a ``web-view`` inside a mini-program writes ``miniProgram`` next to
``MicroMessenger`` (both required: QQ's own mini-program web-view also writes
``miniProgram``), so this adapter comes before WeChat. Its referer is ``servicewechat.com``.

As a target: ``appid`` (``wx`` + 16 hex digits) + ``path`` (a published page, no query)
+ optional ``query``. The link is WeChat's plain-text URL Scheme
``weixin://dl/business/?appid=..&path=..&query=..`` (no API call; the mini-program must
declare the page under 隐私与安全 -> 明文 scheme 拉起此小程序). The query is percent-encoded
whole, as WeChat documents. A merchant who minted a URL Link (``https://wxaurl.cn/...``) may
give it as ``url``: it is the storefront's web URL, and it also opens inside WeChat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import (
    MINI_PATH_PATTERN,
    MINI_QUERY_PATTERN,
    Adapter,
    FieldDoc,
    Target,
    encode,
    strip_mini_program_fields,
)

__all__ = ["WeChatMiniProgram"]


class WeChatMiniProgram(Adapter):
    platform = "wechat_miniprogram"
    label = "微信小程序"
    ua_markers = ("miniProgram",)
    ua_requires = ("MicroMessenger",)
    referer_hosts = ("servicewechat.com",)
    # URL Links minted by WeChat's API: the only https form of a mini-program link.
    owned_hosts = ("wxaurl.cn", "wxmpurl.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("appid", "path"),)
    optional_fields = ("query",)
    field_patterns: ClassVar[Mapping[str, str]] = {
        "appid": r"wx[0-9a-f]{16}",
        "path": MINI_PATH_PATTERN,
        "query": MINI_QUERY_PATTERN,
    }
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "appid": FieldDoc("小程序 AppID", "小程序后台「开发管理 → 开发设置」里的 AppID：wx 开头，"
                          "后跟 16 位十六进制字符", "wx0123456789abcdef"),
        "path": FieldDoc("页面路径", "已发布的页面路径，不带 ? 和参数", "pages/item/index"),
        "query": FieldDoc("页面参数（可选）", "打开页面时带的参数，如 id=42&from=share", "id=42"),
        "url": FieldDoc("URL Link（可选）", "小程序后台或接口生成的 https://wxaurl.cn/… 链接，"
                        "微信内外都能打开小程序", "https://wxaurl.cn/AbCdEf123"),
    }
    # A web-view loads only the mini-program's configured business domains: nothing outside.
    # The merchant's web store is the one plausible business domain (the gateway page itself
    # loaded), and the mini-program's own pages are reached by its JS bridge, not by a link.
    opens = frozenset({"web"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI miniProgram",
        "Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.44 miniProgram/wx0123",
    )

    def normalize(self, target: Target) -> Target:
        return strip_mini_program_fields(target, "path")

    def app_url(self, target: Target) -> str | None:
        url = f"weixin://dl/business/?appid={target['appid']}&path={target['path']}"
        if target.get("query"):
            url += f"&query={encode(target['query'])}"
        return url
