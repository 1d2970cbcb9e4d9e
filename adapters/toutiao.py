"""Toutiao (今日头条): ``NewsArticle/`` in the User-Agent; Toutiao Lite writes ``NewsLite``.

Why these markers: Toutiao's web-view (and its network stack) writes ``NewsArticle/<version>``;
Toutiao Lite adds ``NewsLite``. ByteDance engine markers (``JsSdk``, ``TTWebView``) are shared
with Douyin, TikTok and Feishu and are not used; its crawler ``ToutiaoSpider`` is a bot.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["Toutiao"]


class Toutiao(Adapter):
    platform = "toutiao"
    label = "今日头条"
    ua_markers = ("NewsArticle/", "NewsLite")
    ua_excludes = ("ToutiaoSpider",)
    referer_hosts = ("toutiao.com",)
    # A news reader: it opens outside web pages (articles) and ByteDance's Douyin shop and
    # mini-programs; like Douyin it does not open rival shops (Taobao, JD...) in place.
    opens = frozenset({"web", "douyin"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 13; wv) JsSdk/2 NewsArticle/9.6.4 NetType/wifi",
        "Mozilla/5.0 (Linux; Android 13; wv) JsSdk/2 (NewsLite 9.6.4) TTWebView/1",
    )
