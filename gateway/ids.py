"""Random identifiers: share codes, click ids (the wristband), visitor ids."""

from __future__ import annotations

import base64
import os
import re
import secrets

__all__ = ["BASE62", "TOKEN_ALPHABET", "is_token", "new_click_id", "new_code",
           "new_visitor_id"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The characters of click and visitor ids (base64url: safe in URLs, cookies and states).
TOKEN_ALPHABET = BASE62 + "-_"
_TOKEN = re.compile(r"[0-9A-Za-z_-]{8,32}")


def new_code(length: int = 8) -> str:
    """An unguessable share code: ``length`` base62 characters (8 give 47 bits)."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


def new_click_id() -> str:
    """12 base64url characters (72 random bits): short enough for WeCom's state.

    On the hot path: base64 of urandom costs a fraction of a microsecond.
    """
    return base64.urlsafe_b64encode(os.urandom(9)).decode()


def new_visitor_id() -> str:
    """16 base64url characters (96 random bits)."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


def is_token(value: str) -> bool:
    """True for an id this module could have made (used to accept cookies and ``?c=``)."""
    return _TOKEN.fullmatch(value) is not None
