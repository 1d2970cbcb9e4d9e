"""The wristband WeCom hands back: a compact, unforgeable state carrying platform and click.

WeCom returns the ``state`` of a contact way or join way (30 characters at most) and the
``customer_channel`` of an acquisition link (64 bytes at most) with every add. We put in:

    <platform code: 2><click id: 16, optional><MAC: 6>    base62, the click id base64url

24 characters with a click id (acquisition links, minted per shopper), 8 without (contact
and join ways are made once per platform and reused, so they can carry only the platform).
The MAC is HMAC-SHA256 under a per-merchant key, cut to 6 base62 characters (35 bits):
a forger must guess it online, one WeCom add per try.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..ids import BASE62, TOKEN_ALPHABET

__all__ = ["PLATFORM_CODES", "State", "StateSigner"]

#: Two stable characters per platform id. Never reuse or change a code: states live on in
#: WeCom's records long after they were minted.
PLATFORM_CODES: dict[str, str] = {
    "wechat": "wx", "wecom": "wc", "wechat_miniprogram": "wm", "douyin": "dy",
    "toutiao": "tt", "kuaishou": "ks", "taobao": "tb", "tmall": "tm", "alipay": "ap",
    "jd": "jd", "pinduoduo": "pd", "xiaohongshu": "xh", "weibo": "wb", "qq": "qq",
    "dingtalk": "dt", "feishu": "fs", "bilibili": "bl", "baidu": "bd", "web": "we",
}
_PLATFORMS = {code: platform for platform, code in PLATFORM_CODES.items()}
_MAC_LENGTH = 6
_CLICK_LENGTH = 16


@dataclass(frozen=True, slots=True)
class State:
    platform: str
    click_id: str | None = None


def _base62(data: bytes, length: int) -> str:
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(out)


class StateSigner:
    def __init__(self, secret: str) -> None:
        self._root = hashlib.sha256(b"linkloop-wecom-state\0" + secret.encode()).digest()

    def _mac(self, merchant_id: str, body: str) -> str:
        key = hmac.new(self._root, merchant_id.encode(), hashlib.sha256).digest()
        return _base62(hmac.new(key, body.encode(), hashlib.sha256).digest()[:8], _MAC_LENGTH)

    def mint(self, merchant_id: str, platform: str, click_id: str | None = None) -> str:
        code = PLATFORM_CODES[platform]
        if click_id is not None and (len(click_id) != _CLICK_LENGTH
                                     or any(c not in TOKEN_ALPHABET for c in click_id)):
            click_id = None  # not one of ours: the platform still travels
        body = code + (click_id or "")
        return body + self._mac(merchant_id, body)

    def read(self, merchant_id: str, state: str | None) -> State | None:
        """The platform and click in a state we minted for this merchant; None otherwise."""
        if not state or len(state) not in (2 + _MAC_LENGTH, 2 + _CLICK_LENGTH + _MAC_LENGTH):
            return None
        body, mac = state[:-_MAC_LENGTH], state[-_MAC_LENGTH:]
        if not hmac.compare_digest(mac, self._mac(merchant_id, body)):
            return None
        platform = _PLATFORMS.get(body[:2])
        if platform is None:
            return None
        return State(platform, body[2:] or None)
