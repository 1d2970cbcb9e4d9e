"""DingTalk (钉钉): ``DingTalk/`` or ``DingTalk(`` in the User-Agent.

Why these markers: DingTalk's web-view writes ``AliApp(DingTalk/<version>)`` and, on iOS,
``com.laiwang.DingTalk/<build>``; its desktop client ``dingtalk-win/.. DingTalk(<version>)``.
Its link-preview fetcher ``DingTalkBot-LinkService`` contains ``DingTalk`` too but is a
bot: the detector flags bots first, and the exclusion keeps this adapter honest on its own.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["DingTalk"]


class DingTalk(Adapter):
    platform = "dingtalk"
    label = "钉钉"
    ua_markers = ("DingTalk/", "DingTalk(")
    ua_excludes = ("DingTalkBot",)
    referer_hosts = ("dingtalk.com",)
    # An Alibaba office app: its browser opens web pages and Taobao/Tmall (same group), and
    # has no stake against JD or Pinduoduo web pages. No mini-programs of other apps.
    opens = frozenset({"web", "taobao", "tmall", "jd", "pinduoduo"})
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(DingTalk/7.5.0) com.laiwang.DingTalk/3",
        "Mozilla/5.0 (Linux; Android 13) AliApp(DingTalk/7.5.0) com.alibaba.android.rimet/1",
        "Mozilla/5.0 (Windows NT 10.0) Chrome/91.0 dingtalk-win/1.0.0 DingTalk(7.0.0-Release.1)",
    )
