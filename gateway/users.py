"""Staff logins: passwords hashed with scrypt, and the login check with its lockout.

A password is stored as ``scrypt$N$r$p$<salt>$<hash>`` (salt and hash base64): the KDF's
parameters travel with each hash, so they can be raised later without breaking old ones.
scrypt is memory-hard (N=2**14, r=8: 16 MiB per guess), from the standard library.

``authenticate`` answers only "yes, this user" or "no": an unknown email, a wrong password
and a locked login look the same to the caller (no user enumeration), and an unknown email
costs the same scrypt work as a known one. After ``MAX_FAILURES`` wrong passwords in a row a
login is locked for ``LOCK_SECONDS``, in the database, so every gateway instance honours it;
while locked even the right password is refused, until it passes or an admin runs
``linkloop user unlock``.

The lock stops guessing one login's password, but not one client trying a few passwords on
each of many logins (and locking them all out). So every attempt is also counted per
client address (its salted hash, from the caller): at most ``ADDRESS_MAX_ATTEMPTS`` that fail
in ``ADDRESS_WINDOW_SECONDS``, in the database too; beyond that the address is refused
before any password is checked, and the login's own count is not touched. Twice the
per-login allowance: someone who keeps mistyping their own password meets the lock first,
and an office behind one address has room for several people's typos.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from .store import Store, User

__all__ = [
    "ADDRESS_MAX_ATTEMPTS",
    "ADDRESS_WINDOW_SECONDS",
    "LOCK_SECONDS",
    "MAX_FAILURES",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "STAFF_ROLES",
    "LoginResult",
    "authenticate",
    "check_password",
    "hash_password",
    "normalize_email",
    "verify_password",
]

STAFF_ROLES = ("marketing", "merchant")
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60.0
ADDRESS_MAX_ATTEMPTS = 2 * MAX_FAILURES
ADDRESS_WINDOW_SECONDS = 15 * 60.0
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024

_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Never more than this much memory for one hash, whatever parameters a stored hash names.
_MAXMEM = 64 * 1024 * 1024
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


def normalize_email(text: str) -> str:
    """The email as stored and looked up: trimmed and lower-cased. ValueError if not one."""
    email = text.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ValueError(f"{text!r} is not an email address")
    return email


def check_password(password: str) -> None:
    """ValueError unless the password is acceptable for a new login."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=_MAXMEM)


def hash_password(password: str) -> str:
    """A new self-describing hash with a fresh random salt (CPU-heavy: call off the loop)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _N, _R, _P, _HASH_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; False for a malformed hash too."""
    try:
        kdf, n, r, p, salt, digest = encoded.split("$")
        if kdf != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r),
                         int(p), len(expected))
    except ValueError:  # a malformed field, or parameters scrypt refuses
        return False
    return hmac.compare_digest(actual, expected)


# Checked against when the email is unknown, so that costs as much as a wrong password.
_DUMMY_HASH: str | None = None


def _verify_dummy(password: str) -> bool:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return verify_password(password, _DUMMY_HASH)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The user on success; otherwise why not, for the logs only (never shown), but for
    ``throttled``: the client's address has failed too often, try again in ``retry_after``
    seconds (the password was not checked)."""

    user: User | None
    reason: Literal["ok", "unknown_email", "bad_password", "locked", "throttled"]
    retry_after: float = 0.0


async def authenticate(store: Store, email: str, password: str, *, address: str | None = None,
                       slots: asyncio.Semaphore | None = None,
                       now: float | None = None) -> LoginResult:
    """Check a login; counts a wrong password and locks after ``MAX_FAILURES`` in a row.

    ``address``: the client address's hash, whose attempts are limited (see the module's
    docstring); None for a caller that is not a client over the network. ``slots``, when
    given, is held while the password is checked, and not while a refused address is told
    so. scrypt runs on a worker thread: the event loop (and the share-link hot path) never
    waits on it.
    """
    moment = time.time() if now is None else now
    if address is not None:
        wait = await store.take_login_attempt(address, now=moment,
                                              window_seconds=ADDRESS_WINDOW_SECONDS,
                                              max_attempts=ADDRESS_MAX_ATTEMPTS)
        if wait:
            return LoginResult(None, "throttled", retry_after=wait)
    async with slots or contextlib.nullcontext():
        result = await _check(store, email, password, moment)
    if result.user is not None and address is not None:
        await store.give_back_login_attempt(address)  # only failures count against it
    return result


async def _check(store: Store, email: str, password: str, moment: float) -> LoginResult:
    try:
        email = normalize_email(email)
    except ValueError:
        email = ""
    user = await store.get_user(email) if email else None
    password = password[:MAX_PASSWORD_LENGTH + 1]  # longer can never match: bound the work
    if user is None:
        await asyncio.to_thread(_verify_dummy, password)
        return LoginResult(None, "unknown_email")
    matches = await asyncio.to_thread(verify_password, password, user.password_hash)
    if user.locked(moment):
        return LoginResult(None, "locked")  # not counted: the lock is not extended by guessing
    if not matches:
        await store.record_login_failure(user.email, now=moment, max_failures=MAX_FAILURES,
                                         lock_seconds=LOCK_SECONDS)
        return LoginResult(None, "bad_password")
    await store.record_login_success(user.email, now=moment)
    return LoginResult(user, "ok")
