"""Bilibili (哔哩哔哩): ``BiliApp/`` in the User-Agent.

Why these markers: the app's web-view appends ``BiliApp/<build> mobi_app/<flavour>``; the
``mobi_app/`` tag is Bilibili's own too (it is on every client flavour, including the HD and
international ones).
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["Bilibili"]


class Bilibili(Adapter):
    platform = "bilibili"
    label = "哔哩哔哩"
    ua_markers = ("BiliApp/", "mobi_app/")
    referer_hosts = ("bilibili.com", "b23.tv")
    # Bilibili links out to Taobao and JD ("蓝链" partnerships) and to ordinary web pages.
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (Linux; Android 13; wv) BiliApp/7580300 mobi_app/android channel/master",
        "Mozilla/5.0 (iPhone) Mobile/15E148 BiliApp/77900100 os/ios model/iPhone 15",
    )
