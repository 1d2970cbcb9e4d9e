"""Where each app hides "open in browser": the landing page's overlay points there.

An app that blocks a storefront (Taobao inside WeChat, anything inside Douyin) still lets
the shopper leave for the phone's browser through its own menu, which sits in a corner of
the app's title bar and words the choice its own way, differently on iOS (Safari) and
Android. Some apps offer no browser at all, only "copy link": the shopper then pastes the
link into a browser.

One row per app; data, not code, so a changed app is a one-line fix. The hot path only does
a dict lookup (``overlay_for``): every answer is built here, once, at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GUIDES", "Guide", "Overlay", "overlay_for"]

Corner = Literal["top-right", "bottom-right"]

_CORNER_WORDS: dict[str, str] = {"top-right": "右上角", "bottom-right": "右下角"}
_COPY = "复制链接"


@dataclass(frozen=True, slots=True)
class Guide:
    """How one app is left for the browser. An action of None: the app only copies links."""

    corner: Corner
    ios: str | None
    android: str | None
    menu: str = "···"


@dataclass(frozen=True, slots=True)
class Overlay:
    """What the landing page's overlay says and where its arrow points."""

    #: ``top-right`` or ``bottom-right``: where the arrow points (a CSS class).
    corner: Corner
    #: The corner in words (右上角).
    where: str
    #: The menu button as the app draws it.
    menu: str
    #: The menu entry to choose, in the app's own words.
    action: str
    #: True when that entry only copies the link (paste it into a browser next).
    copy_only: bool


#: Platform id -> the app's menu. Apps missing here get ``_DEFAULT``.
GUIDES: dict[str, Guide] = {
    "wechat": Guide("top-right", ios="在Safari中打开", android="在浏览器打开"),
    "wecom": Guide("top-right", ios="用默认浏览器打开", android="用默认浏览器打开"),
    # A mini-program's web-view has no browser entry: copy the link (the page has a button).
    "wechat_miniprogram": Guide("top-right", ios=None, android=None),
    "qq": Guide("top-right", ios="在Safari中打开", android="用浏览器打开"),
    "dingtalk": Guide("top-right", ios="在浏览器打开", android="在浏览器打开"),
    "feishu": Guide("top-right", ios="在浏览器中打开", android="在浏览器中打开"),
    "alipay": Guide("top-right", ios="在浏览器中打开", android="在浏览器中打开"),
    "taobao": Guide("top-right", ios=None, android=None),
    "tmall": Guide("top-right", ios=None, android=None),
    # Douyin's Android menu has a browser entry; on iOS it only copies the link.
    "douyin": Guide("top-right", ios=None, android="在浏览器打开"),
    "toutiao": Guide("top-right", ios="在Safari中打开", android="在浏览器打开"),
    "kuaishou": Guide("top-right", ios=None, android=None),
    "jd": Guide("top-right", ios=None, android=None),
    "pinduoduo": Guide("top-right", ios=None, android=None),
    "xiaohongshu": Guide("top-right", ios=None, android=None),
    "weibo": Guide("top-right", ios="用Safari打开", android="用浏览器打开"),
    "bilibili": Guide("top-right", ios="在浏览器中打开", android="在浏览器中打开"),
    # Baidu's web pages keep their menu in the toolbar at the bottom.
    "baidu": Guide("bottom-right", ios="在浏览器中打开", android="在浏览器中打开"),
}
_DEFAULT = Guide("top-right", ios="在Safari中打开", android="在浏览器打开")


def _overlay(guide: Guide, ios: bool) -> Overlay:
    action = guide.ios if ios else guide.android
    return Overlay(corner=guide.corner, where=_CORNER_WORDS[guide.corner], menu=guide.menu,
                   action=action or _COPY, copy_only=action is None)


_OVERLAYS: dict[tuple[str, bool], Overlay] = {
    (platform, ios): _overlay(guide, ios) for platform, guide in GUIDES.items()
    for ios in (True, False)
}
_DEFAULT_OVERLAYS = {ios: _overlay(_DEFAULT, ios) for ios in (True, False)}


def overlay_for(platform: str, os: str) -> Overlay:
    """The overlay for a shopper in ``platform``'s app on ``os`` (a dict lookup)."""
    ios = os == "ios"
    found = _OVERLAYS.get((platform, ios))
    return found if found is not None else _DEFAULT_OVERLAYS[ios]
