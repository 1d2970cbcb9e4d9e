"""WeCom (企业微信): ``wxwork/`` in the User-Agent.

Why this marker: a WeCom web-view also writes ``MicroMessenger/`` (and ``WeChat/`` on the
Mac), so WeCom must be checked before WeChat; ``wxwork/<version>`` is the one token only WeCom
writes, on every client (iOS, Android, Windows, Mac).

WeCom is where the merchant's closed loop ends (the contact or group a shopper adds); it is
an app shoppers can be in, with no storefront of its own.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["WeCom"]


class WeCom(Adapter):
    platform = "wecom"
    label = "企业微信"
    ua_markers = ("wxwork/",)
    referer_hosts = ("work.weixin.qq.com",)
    # WeCom's built-in browser opens ordinary web pages and, like WeChat, JD and Pinduoduo;
    # it is not a WeChat mini-program host for arbitrary mini-programs (only ones bound to the
    # corp), so the mini-program is offered through the guide rather than opened in place.
    opens = frozenset({"web", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 wxwork/4.1.20 MicroMessenger/7.0.1 Language/zh",
        "Mozilla/5.0 (Windows NT 10.0) wxwork/4.1.30 (MicroMessenger/6.2) WindowsWechat",
    )
