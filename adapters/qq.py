"""QQ (手机QQ): ``QQ/<digits>`` in the User-Agent, checked after WeChat.

Why this marker: QQ's web-view writes ``QQ/<version>`` (``IPadQQ/<version> QQ/<version>`` on
the iPad) together with a ``V1_IPH_SQ_``/``V1_AND_SQ_`` build tag. The bare substring is too
short to trust, so a pattern requires the digit; ``MQQBrowser/`` and ``QQBrowser/`` (the
standalone QQ Browser and Tencent's X5/TBS engine, also inside WeChat) never have ``/``
right after ``QQ``, so a plain QQ Browser is a plain browser. ``QQ/`` must start a word:
Baidu's app writes an encoded device id that can end in ``QQ/1`` (``…HREROQQ/1``), and QQ
comes before Baidu in the registry. WeChat UAs sometimes carry ``QQ`` too: WeChat comes
first.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["QQ"]


class QQ(Adapter):
    platform = "qq"
    label = "QQ"
    ua_markers = ("QQ/",)
    ua_pattern = r"(?<![a-z0-9])qq/\d"
    referer_hosts = ("qzone.qq.com", "im.qq.com", "qm.qq.com", "mqq.qq.com")
    # QQ's web-view opens web pages, JD and Pinduoduo like WeChat; Taobao links get the
    # "open in browser" treatment, and WeChat mini-programs cannot run in QQ.
    opens = frozenset({"web", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 QQ/9.0.20.613 V1_IPH_SQ_9.0.20_1_APP_A",
        "Mozilla/5.0 (Linux; Android 13; wv) V1_AND_SQ_9.0.20_5866_YYB_D QQ/9.0.20.16570",
    )
