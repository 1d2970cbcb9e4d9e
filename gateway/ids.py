"""Random identifiers: share codes, click ids (the wristband), visitor ids."""

from __future__ import annotations

import binascii
import os
import re
import secrets
import time

__all__ = ["BASE62", "CODE_PATTERN", "TOKEN_ALPHABET", "is_token", "is_visitor_id", "new_click_id",
           "new_code"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The characters of click and visitor ids (base64url: safe in URLs, cookies and states).
TOKEN_ALPHABET = BASE62 + "-_"
_TOKEN = re.compile(r"[0-9A-Za-z_-]{8,32}")
#: Every share code there can be: a generated one (``new_code``, base62) or a merchant's
#: slug (gateway/catalog.py checks slugs against this same pattern), 3 to 64 characters.
#: The share link answers any other code with a 404 without asking storage.
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,63}")
#: Every visitor id the gateway ever set is 16 characters: the first click's id now, and
#: 16 random base62 / base64url characters before that.
_VISITOR = re.compile(r"[0-9A-Za-z_-]{16}")


def new_code(length: int = 8) -> str:
    """An unguessable share code: ``length`` base62 characters (8 give 47 bits)."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _base64url(raw: bytes) -> str:
    # binascii directly: base64.urlsafe_b64encode is two Python-level wrappers around it.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode()


def _clock(ms: int) -> str:
    """A millisecond as 8 base62 digits, which sort as the numbers do: BASE62 is in byte
    order (base64's alphabet is not: 'z' before '0'), and has no '-' to start an id with
    (a command line would take it for an option). 62**8 ms last until the year 8900."""
    digits = []
    for _ in range(8):
        ms, digit = divmod(ms, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


class _ClickIds:
    """Time-ordered ids: 8 base62 digits of the millisecond clock, then 8 base64url
    characters of 48 random bits.

    Ids made later sort later, so storage appends them at the end of its B-trees instead of
    on random pages: a batch of clicks dirties a few pages, not one page per click. This
    runs on every click, so the work is done in bulk: the clock's 8 characters once per
    millisecond, and the random halves 4,096 at a time from one os.urandom call (6 bytes
    are exactly 8 base64 characters, so one encoding cuts into whole halves).
    """

    _BATCH = 4096

    def __init__(self) -> None:
        self._ms = -1
        self._clock = ""
        self._random: list[str] = []

    def _refill(self) -> None:
        encoded = _base64url(os.urandom(6 * self._BATCH))
        self._random = [encoded[i:i + 8] for i in range(0, len(encoded), 8)]

    def new(self) -> str:
        # No lock: list.pop is atomic, and a thread racing the loop here can at worst pair
        # a random half with the previous millisecond.
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            self._ms, self._clock = ms, _clock(ms)
        try:
            half = self._random.pop()
        except IndexError:
            self._refill()
            half = self._random.pop()
        return self._clock + half


_click_ids = _ClickIds()

#: A new click id: 16 characters, the millisecond in base62 then 48 random bits in base64url.
#:
#: 48 random bits keep two clicks of the same millisecond apart (a collision would be
#: skipped as a replay); 16 characters still fit WeCom's 30-character state. New visitors
#: are known by the id of their first click. The generator's bound method itself, not a
#: function calling it: the share link pays for every Python frame.
new_click_id = _click_ids.new


def is_token(value: str) -> bool:
    """True for an id this module could have made (used to accept ``?c=`` click ids)."""
    return _TOKEN.fullmatch(value) is not None


def is_visitor_id(value: str) -> bool:
    """True for an ``ll_v`` cookie value the gateway could have set; anything else (too
    long, malformed, or some other site's cookie of that name) gets a fresh one."""
    return _VISITOR.fullmatch(value) is not None
