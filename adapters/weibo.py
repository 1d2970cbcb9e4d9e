"""Weibo (微博): ``Weibo (`` or ``__weibo__`` in the User-Agent.

Why these markers: Weibo's web-view appends ``Weibo (<device>__weibo__<version>__<os>..)``;
some Android builds drop the ``Weibo (`` prefix and keep ``__weibo__``; the international and
lite builds write ``WeiboIntl..``/``Weibolite..``. Weibo embeds Taobao's ``WindVane`` SDK,
which is why no Alibaba adapter trusts ``WindVane`` alone.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["Weibo"]


class Weibo(Adapter):
    platform = "weibo"
    label = "微博"
    ua_markers = ("Weibo (", "__weibo__", "WeiboIntl", "Weibolite", "AndroidWeibo")
    referer_hosts = ("weibo.com", "weibo.cn", "t.cn")
    # Alibaba-invested, with Taobao's SDK inside: Weibo opens web pages, Taobao/Tmall and JD.
    opens = frozenset({"web", "taobao", "tmall", "jd"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 Weibo (iPhone15,2__weibo__14.1.0__iphone__os17.2)",
        "Mozilla/5.0 (Linux; Android 13; wv) Mobile Safari/537.36 Phone_13_WeiboIntlAndroid_6300",
    )
