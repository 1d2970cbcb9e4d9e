"""Baidu (百度 App): ``baiduboxapp`` in the User-Agent.

Why this marker: the Baidu app (and Baidu Lite, and its smart mini-programs ``swan-baiduboxapp``)
writes ``baiduboxapp/<version> (Baidu; P1 ..)``, in either case (``BaiduBoxApp/``). Baidu's
crawlers (``Baiduspider``) are bots, flagged before any adapter.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["Baidu"]


class Baidu(Adapter):
    platform = "baidu"
    label = "百度"
    ua_markers = ("baiduboxapp",)
    referer_hosts = ("baidu.com",)
    # A search app: it opens web pages and the web item pages of the big shops.
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 13; wv) T7/13.50 SP-engine/3.0 baiduboxapp/13.50.0.10",
        "Mozilla/5.0 (iPhone) Mobile/15E148 BaiduBoxApp/13.50.0 (Baidu; P2 17.2)",
    )
