"""WeChat (微信): ``MicroMessenger/`` in the User-Agent, after WeCom has had its turn."""

from __future__ import annotations

from .base import Adapter

__all__ = ["WeChat"]


class WeChat(Adapter):
    platform = "wechat"
    label = "微信"
    ua_markers = ("MicroMessenger/",)
    # WeChat's web-view opens ordinary web pages and JD (a Tencent partner), but blocks
    # Taobao and Tmall links; mini-programs are reached through a mini-program link.
    opens = frozenset({"web", "jd", "pinduoduo", "wechat_miniprogram"})
    ua_samples = ("Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.40(0x18002831) NetType/WIFI",)
