"""Random identifiers: share codes, click ids (the wristband), visitor ids."""

from __future__ import annotations

import os
import re
import secrets

__all__ = ["BASE62", "is_token", "new_click_id", "new_code", "new_visitor_id"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"[0-9A-Za-z]{8,32}")


def _base62(data: bytes, length: int) -> str:
    n = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(BASE62[r])
    return "".join(chars)


def new_code(length: int = 8) -> str:
    """An unguessable share code: ``length`` base62 characters (8 give 47 bits)."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


def new_click_id() -> str:
    """12 base62 characters (71 bits) from 9 random bytes; short enough for WeCom's state."""
    return _base62(os.urandom(9), 12)


def new_visitor_id() -> str:
    return _base62(os.urandom(12), 16)


def is_token(value: str) -> bool:
    """True for an id this module could have made (used to accept cookies and ``?c=``)."""
    return _TOKEN.fullmatch(value) is not None
