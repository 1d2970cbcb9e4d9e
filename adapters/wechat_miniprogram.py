"""A WeChat mini-program (微信小程序): a target, and a place a shopper can be in.

As a place: a ``web-view`` inside a mini-program writes ``miniProgram`` next to
``MicroMessenger`` (both required: QQ's own mini-program web-view also writes
``miniProgram``), so this adapter comes before WeChat. Its referer is ``servicewechat.com``.

As a target: ``appid`` (``wx`` + 16 hex digits) + ``path`` (a published page, no query)
+ optional ``query``, and for the pages that help a shopper find it by hand: ``name`` (the
mini-program's name, shown as "search 「name」 in WeChat") and ``username`` (its original id,
``gh_`` + 12 hex, also written on the open tag); ``scene`` (up to 32 characters) is what a
mini-program code carries when ``query`` does not fit.

Which link WeChat documents for which place (gateway/resolve.py decides, per click):

* the plain-text URL Scheme ``weixin://dl/business/?appid=..&path=..&query=..`` needs no API
  call, but opens only pages declared in the mini-program's admin (设置 -> 隐私与安全 -> 明文
  Scheme 拉起此小程序), and only from outside WeChat. Source: 获取 URL Scheme, "明文 URL
  Scheme", https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-scheme.html
  (query: at most 512 characters, percent-encoded whole);
* an encrypted scheme ``weixin://dl/business/?t=TICKET`` minted by ``wxa/generatescheme``
  opens any published page, from outside WeChat too (same page, "加密 URL Scheme");
* a URL Link ``https://wxaurl.cn/TICKET`` (or ``wxmpurl.cn``) minted by
  ``wxa/generate_urllink`` opens from inside WeChat as well ("适用于从短信、邮件、网页、微信内等
  场景打开小程序"; inside WeChat it opens through the open tag). Source: 获取加密 URL Link,
  https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-link.html.
  A merchant who minted one by hand may give it as ``url``.
"""

from __future__ import annotations

import re
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

__all__ = ["PLAIN_SCHEME_NOTE", "SCENE_PATTERN", "WeChatMiniProgram"]

#: The mini-program code's ``scene``: "最大32个可见字符，只支持数字，大小写英文以及部分特殊字符：
#: !#$&'()*+,/:;=?@-._~". Source: 获取不限制的小程序码 (getwxacodeunlimit),
#: https://developers.weixin.qq.com/miniprogram/dev/server/API/qrcode-link/qr-code/api_getunlimitedqrcode.html
SCENE_PATTERN = r"[A-Za-z0-9!#$&'()*+,/:;=?@._~-]{1,32}"

#: What a merchant is told wherever they set a ``wechat_miniprogram`` target.
PLAIN_SCHEME_NOTE = (
    "Without the mini-program's appid and secret (PUT /api/credentials/wechat_miniprogram), "
    "phones outside WeChat get the plain-text scheme weixin://dl/business/?appid=..&path=.., "
    "which opens only pages declared in the mini-program's admin (设置 -> 隐私与安全 -> "
    "明文Scheme拉起此小程序), and shoppers inside WeChat get a page that helps them find the "
    "mini-program. With them, the gateway mints a URL Link and an encrypted scheme for "
    "every product and renews them before they expire."
)

# An encrypted scheme as generatescheme returns it ("openlink"): weixin://dl/business/?t=TICKET.
# Source: 获取加密scheme码, https://developers.weixin.qq.com/miniprogram/dev/server/API/qrcode-link/url-scheme/api_generatescheme.html
_ENCRYPTED_SCHEME = re.compile(r"weixin://dl/business/\?t=[A-Za-z0-9_-]{1,64}")


class WeChatMiniProgram(Adapter):
    platform = "wechat_miniprogram"
    label = "微信小程序"
    ua_markers = ("miniProgram",)
    ua_requires = ("MicroMessenger",)
    referer_hosts = ("servicewechat.com",)
    # URL Links minted by WeChat's API: the only https form of a mini-program link.
    owned_hosts = ("wxaurl.cn", "wxmpurl.cn")
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("appid", "path"),)
    optional_fields = ("query", "name", "username", "scene")
    field_patterns: ClassVar[Mapping[str, str]] = {
        "appid": r"wx[0-9a-f]{16}",
        "path": MINI_PATH_PATTERN,
        "query": MINI_QUERY_PATTERN,
        # Shown on a page ("在微信中搜索「name」"): a mini-program's name is at most 30 characters.
        "name": r"[^<>\"'&]{1,30}",
        # The original id: 开放标签 wx-open-launch-weapp's username,
        # "小程序原始id，即小程序对应的以gh_开头的id".
        # Source: https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_Open_Tag.html
        "username": r"gh_[0-9a-f]{12}",
        "scene": SCENE_PATTERN,
    }
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "appid": FieldDoc("小程序 AppID", "小程序后台「开发管理 → 开发设置」里的 AppID：wx 开头，"
                          "后跟 16 位十六进制字符", "wx0123456789abcdef"),
        "path": FieldDoc("页面路径", "已发布的页面路径，不带 ? 和参数", "pages/item/index"),
        "query": FieldDoc("页面参数（可选）", "打开页面时带的参数，如 id=42&from=share", "id=42"),
        "name": FieldDoc("小程序名称（可选）", "顾客在微信里搜索这个名字找到小程序", "茶庄会员店"),
        "username": FieldDoc("原始 ID（可选）",
                             "小程序后台「设置 → 基本设置」里 gh_ 开头的原始 ID，"
                             "用于微信内的打开按钮",
                             "gh_0123456789ab"),
        "scene": FieldDoc("小程序码参数（可选）",
                          "小程序码携带的参数，最多 32 个字符；不填则用页面参数", "id=42"),
        "url": FieldDoc("URL Link（可选）", "小程序后台或接口生成的 https://wxaurl.cn/… 链接，"
                        "微信内外都能打开小程序", "https://wxaurl.cn/AbCdEf123"),
    }
    # A web-view loads only the mini-program's configured business domains: nothing outside.
    # The merchant's web store is the one plausible business domain (the gateway page itself
    # loaded), and the mini-program's own pages are reached by its JS bridge, not by a link.
    opens = frozenset({"web"})
    # Nor does it follow a scheme: a web-view's navigation stays on http(s).
    follows_schemes = False
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI miniProgram",
        "Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.44 miniProgram/wx0123",
    )

    def normalize(self, target: Target) -> Target:
        return strip_mini_program_fields(target, "path")

    def app_url(self, target: Target) -> str | None:
        # 明文 URL Scheme: weixin://dl/business/?appid=*APPID*&path=*PATH*&query=*QUERY*, the
        # query url-encoded whole (url-scheme.html above). No env_version: release is default.
        url = f"weixin://dl/business/?appid={target['appid']}&path={target['path']}"
        if target.get("query"):
            url += f"&query={encode(target['query'])}"
        return url

    def is_mini_program(self, target: Target) -> bool:
        return True

    def check_scheme(self, value: str) -> str | None:
        return value if _ENCRYPTED_SCHEME.fullmatch(value) else None

    @staticmethod
    def code_scene(target: Target, share_code: str) -> str | None:
        """What the mini-program code of a product carries: the target's ``scene``, else its
        ``query`` when that fits the scene's rules, else ``ll=<share code>``; None when none
        fits (no code is fetched then)."""
        pattern = re.compile(SCENE_PATTERN)
        for candidate in (target.get("scene"), target.get("query"), f"ll={share_code}"):
            if candidate and pattern.fullmatch(candidate):
                return candidate
        return None
