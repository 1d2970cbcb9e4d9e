"""WeChat (微信): ``MicroMessenger`` in the User-Agent, after WeCom has had its turn.

Why these markers: every WeChat web-view (iOS, Android, the Windows and Mac clients) carries
``MicroMessenger``, sometimes without the ``/<version>`` (an Android XWEB build writes
``MicroMessenger Weixin QQ``); the Windows client adds ``WindowsWechat`` and WeChat's own
network stack sends ``WeChat/<version> CFNetwork``. WeCom also carries ``MicroMessenger`` (and
``WeChat/`` on the Mac), and so does a mini-program web-view: both adapters come first in the
registry. WeChat UAs often carry ``MQQBrowser``/``TBS`` and sometimes ``QQ``; that is why QQ is
checked after WeChat.

WeChat has no storefront of its own: a product is reached in WeChat through a
``wechat_miniprogram`` target (see ``miniprogram_platform``) or a web page.
"""

from __future__ import annotations

from .base import Adapter

__all__ = ["WeChat"]


class WeChat(Adapter):
    platform = "wechat"
    label = "微信"
    ua_markers = ("MicroMessenger", "WindowsWechat", "WeChat/")
    referer_hosts = ("weixin.qq.com", "wx.qq.com")
    # WeChat's web-view opens ordinary web pages, JD and Pinduoduo (Tencent partners), and its
    # own mini-programs through a mini-program link; it blocks Taobao/Tmall links, Douyin,
    # Kuaishou and Xiaohongshu shop links and the Alipay scheme.
    opens = frozenset({"web", "jd", "pinduoduo", "wechat_miniprogram"})
    miniprogram_platform = "wechat_miniprogram"
    ua_samples = (
        "Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI",
        "Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.44.2502 XWEB/1160065",
        "Mozilla/5.0 (Windows NT 10.0) MicroMessenger/7.0.20 WindowsWechat",
    )
