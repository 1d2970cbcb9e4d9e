"""Alipay (支付宝): ``AliApp(AP/`` or ``AlipayClient/`` in the User-Agent; a target too.

Why these markers: Alibaba apps share ``AliApp(<code>/<version>)`` and the ``WindVane``
engine; ``AP`` is Alipay, which also writes ``AlipayClient/<version>``. ``WindVane`` alone is
never used (Weibo embeds it too).

As a target: an Alipay mini-program, ``appid`` (16 digits) + ``page`` (+ ``query``). Alipay
documents two link forms (支付宝开放平台, 小程序 scheme 链接,
https://opendocs.alipay.com/support/01rb6e):

* inside Alipay, and from a phone that has it: the scheme
  ``alipays://platformapi/startapp?appId=..&page=..&query=..``, the query percent-encoded
  whole (Alipay passes only the first parameter otherwise);
* from a phone browser or another app: the same scheme percent-encoded after
  ``https://ds.alipay.com/?scheme=``, Alipay's own page that hands the phone over to the app
  ("scheme 转换成 https 链接唤起小程序"). It is a phone link: a desktop gets the share link's QR.
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

__all__ = ["Alipay"]


class Alipay(Adapter):
    platform = "alipay"
    label = "支付宝"
    ua_markers = ("AliApp(AP/", "AlipayClient/")
    referer_hosts = ("alipay.com",)
    owned_hosts = ("alipay.com",)
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("appid", "page"),)
    optional_fields = ("query",)
    field_patterns: ClassVar[Mapping[str, str]] = {
        "appid": r"[0-9]{16}",
        "page": MINI_PATH_PATTERN,
        "query": MINI_QUERY_PATTERN,
    }
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {
        "appid": FieldDoc("支付宝小程序 AppID", "支付宝开放平台里的 16 位数字 AppID",
                          "2021000000000001"),
        "page": FieldDoc("页面路径", "已发布的页面路径，不带 ? 和参数", "pages/item/index"),
        "query": FieldDoc("页面参数（可选）", "打开页面时带的参数，如 id=42", "id=42"),
    }
    # Alipay opens its own mini-programs and Taobao/Tmall (same group); other outside links
    # get a risk interstitial or are refused, so the web store goes through the guide.
    opens = frozenset({"alipay", "taobao", "tmall"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(AP/10.5.60) AlipayClient/10.5.60",
        "Mozilla/5.0 (Linux; Android 13) Nebula AlipayDefined(nt:WIFI) AlipayClient/10.5",
    )

    def normalize(self, target: Target) -> Target:
        return strip_mini_program_fields(target, "page")

    def app_url(self, target: Target) -> str | None:
        url = f"alipays://platformapi/startapp?appId={target['appid']}&page={target['page']}"
        if target.get("query"):
            url += f"&query={encode(target['query'])}"
        return url

    def is_mini_program(self, target: Target) -> bool:
        return True

    def phone_url(self, target: Target) -> str | None:
        scheme = self.app_url(target)
        return f"https://ds.alipay.com/?scheme={encode(scheme)}" if scheme else None
