"""Feishu / Lark (飞书): ``Lark/`` or ``Feishu`` in the User-Agent.

Why these markers: the web-view writes ``Lark/<version> LarkLocale/..`` on every client and
``ChannelName/Feishu`` (or ``Feishu/``) in the Chinese build. It is a ByteDance app, so its UA
may carry ``BytedanceWebview``/``TTWebView`` like Douyin and Toutiao: those engine markers are
never used for detection, only each app's own name.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["Feishu"]


class Feishu(Adapter):
    platform = "feishu"
    label = "飞书"
    ua_markers = ("Lark/", "LarkLocale/", "Feishu")
    referer_hosts = ("feishu.cn", "larksuite.com", "larkoffice.com")
    # An office app with no shop of its own: its browser opens ordinary web pages and the
    # web item pages of Taobao, Tmall, JD and Pinduoduo.
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 Safari/604.1 Lark/7.10.5 LarkLocale/zh_CN",
        "Mozilla/5.0 (Macintosh) Chrome/120.0 Safari/537.36 Feishu/7.10.5",
    )
