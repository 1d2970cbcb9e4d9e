"""Platform adapters, one module per platform, in one explicit ordered registry.

Order matters for detection: the first adapter that claims a User-Agent wins, so a more
specific app comes before the app whose markers it also carries (WeCom and a WeChat
mini-program web-view before WeChat, WeChat before QQ), and the plain-web fallback is last.
The same order breaks ties between Referer hosts (``work.weixin.qq.com`` is WeCom's, the
rest of ``weixin.qq.com`` WeChat's) and lists a product's storefronts.
"""

from __future__ import annotations

from .alipay import Alipay
from .baidu import Baidu
from .base import Adapter, FieldDoc, Storefront, Target, TargetError
from .bilibili import Bilibili
from .dingtalk import DingTalk
from .douyin import Douyin
from .feishu import Feishu
from .jd import JD
from .kuaishou import Kuaishou
from .pinduoduo import Pinduoduo
from .qq import QQ
from .taobao import Taobao
from .tmall import Tmall
from .toutiao import Toutiao
from .web import Web
from .wechat import WeChat
from .wechat_miniprogram import WeChatMiniProgram
from .wecom import WeCom
from .weibo import Weibo
from .xiaohongshu import Xiaohongshu

__all__ = [
    "ADAPTERS",
    "Adapter",
    "FieldDoc",
    "Storefront",
    "Target",
    "TargetError",
    "by_platform",
    "platform_ids",
    "target_platform_ids",
]

#: Every adapter, in detection order; the web fallback is last.
ADAPTERS: tuple[Adapter, ...] = (
    WeCom(),              # carries MicroMessenger too
    WeChatMiniProgram(),  # MicroMessenger + miniProgram
    WeChat(),
    QQ(),                 # after WeChat: WeChat UAs may carry QQ
    DingTalk(),
    Feishu(),
    Alipay(),
    Tmall(),
    Taobao(),
    Douyin(),
    Toutiao(),
    Kuaishou(),
    JD(),
    Pinduoduo(),
    Xiaohongshu(),
    Weibo(),
    Bilibili(),
    Baidu(),
    Web(),
)

_BY_PLATFORM: dict[str, Adapter] = {a.platform: a for a in ADAPTERS}


def by_platform(platform: str) -> Adapter | None:
    """The adapter for a platform id, or None when the id is unknown."""
    return _BY_PLATFORM.get(platform)


def platform_ids() -> tuple[str, ...]:
    """Every platform id, in registry order."""
    return tuple(_BY_PLATFORM)


def target_platform_ids() -> tuple[str, ...]:
    """The platform ids a product may have a target on, in registry order."""
    return tuple(a.platform for a in ADAPTERS if a.is_target)
