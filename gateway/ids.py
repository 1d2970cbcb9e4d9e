"""Random identifiers: share codes, click ids (the wristband), visitor ids."""

from __future__ import annotations

import binascii
import os
import re
import secrets
import threading
import time

__all__ = ["BASE62", "TOKEN_ALPHABET", "is_token", "new_click_id", "new_code"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The characters of click and visitor ids (base64url: safe in URLs, cookies and states).
TOKEN_ALPHABET = BASE62 + "-_"
_TOKEN = re.compile(r"[0-9A-Za-z_-]{8,32}")


def new_code(length: int = 8) -> str:
    """An unguessable share code: ``length`` base62 characters (8 give 47 bits)."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


class _RandomPool:
    """os.urandom bytes fetched 64 KiB at a time: one system call per ~5,000 ids, not two
    per click. Only the event loop thread makes ids on the hot path; a lock keeps any other
    caller safe."""

    _SIZE = 65536

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._buffer):
                self._buffer, self._at = os.urandom(self._SIZE), 0
            chunk = self._buffer[self._at : self._at + n]
            self._at += n
            return chunk


_random = _RandomPool()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _time_ordered(random_bytes: int) -> str:
    """48 bits of the millisecond clock, then random bytes, base64url.

    Ids made later sort later, so storage appends them at the end of its B-trees instead of
    on random pages: a batch of clicks dirties a few pages, not one page per click.
    (binascii directly: base64.urlsafe_b64encode is two Python-level wrappers around it.)
    """
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + _random.take(random_bytes)
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode()


def new_click_id() -> str:
    """16 base64url characters: the millisecond, then 48 random bits.

    48 random bits keep two clicks of the same millisecond apart (a collision would be
    skipped as a replay); 16 characters still fit WeCom's 30-character state.
    """
    return _time_ordered(6)


def is_token(value: str) -> bool:
    """True for an id this module could have made (used to accept cookies and ``?c=``)."""
    return _TOKEN.fullmatch(value) is not None
