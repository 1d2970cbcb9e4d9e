"""Dashboard sessions: a signed JWT in an HttpOnly, SameSite cookie, and CSRF checks.

The session token is signed with the gateway's API signing key (``auth.secret``) but for its
own audience (``<auth.audience>:dashboard``): a session cookie is never accepted as an API
bearer token, nor an API token as a session. It names the merchant (``sub``), the role, the
user's email and a random per-session CSRF token, which every POST form of the dashboard
must echo back.

A session is also checked against the user's row on every request (one indexed read): a
deleted user, a changed role or merchant, or a logout (``sessions_after``) voids it at once,
on every gateway instance.

The login form has no session yet: it carries a double-submit token, the same random value
in a cookie (SameSite=Strict, HttpOnly) and in a hidden field. Every POST must also come
from the dashboard's own origin when the browser says where it comes from (``Origin``).

Login attempts are limited per client address (gateway/users.py); ``client_address`` says
which address a request counts against.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from ..auth import Principal
from ..store import Store
from ..store.base import StaffRole

__all__ = [
    "COOKIE_PATH",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "Session",
    "SessionService",
    "client_address",
    "csrf_matches",
    "new_csrf_token",
    "safe_next",
    "same_origin",
]

SESSION_COOKIE = "ll_session"
LOGIN_CSRF_COOKIE = "ll_login_csrf"
COOKIE_PATH = "/dashboard"
#: A working day and then some; after it, log in again.
SESSION_TTL = 12 * 3600
_STAFF_ROLES = ("merchant", "marketing")
_NEXT = re.compile(r"/dashboard(?:/[A-Za-z0-9_./-]*)?(?:\?[A-Za-z0-9_.~%=&+-]*)?")


@dataclass(frozen=True, slots=True)
class Session:
    email: str
    merchant_id: str
    role: StaffRole
    csrf: str
    #: When the user logged in (seconds, not rounded): a logout voids sessions up to it.
    issued_at: float
    expires_at: int

    @property
    def principal(self) -> Principal:
        return Principal(merchant_id=self.merchant_id, role=self.role)


class SessionService:
    algorithm = "HS256"

    def __init__(self, secret: str, audience: str) -> None:
        self._secret = secret
        self.audience = f"{audience}:dashboard"

    def mint(self, email: str, merchant_id: str, role: StaffRole, *,
             now: float | None = None, ttl: int = SESSION_TTL) -> tuple[str, Session]:
        moment = time.time() if now is None else now
        session = Session(email=email, merchant_id=merchant_id, role=role,
                          csrf=new_csrf_token(), issued_at=moment,
                          expires_at=int(moment) + ttl)
        claims = {"sub": merchant_id, "role": role, "user": email, "csrf": session.csrf,
                  "auth_time": moment, "aud": self.audience, "iat": int(moment),
                  "exp": session.expires_at}
        return jwt.encode(claims, self._secret, algorithm=self.algorithm), session

    def verify(self, token: str) -> Session | None:
        """The session a token carries, or None when it is not valid (any reason)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                audience=self.audience,
                                options={"require": ["sub", "role", "user", "csrf",
                                                     "auth_time", "aud", "exp"]})
        except jwt.PyJWTError:
            return None
        sub, role, user = claims["sub"], claims["role"], claims["user"]
        csrf, auth_time = claims["csrf"], claims["auth_time"]
        if (role not in _STAFF_ROLES or not isinstance(sub, str) or not sub
                or not isinstance(user, str) or not isinstance(csrf, str) or len(csrf) < 16
                or not isinstance(auth_time, int | float)):
            return None
        return Session(email=user, merchant_id=sub, role=role, csrf=csrf,
                       issued_at=float(auth_time), expires_at=int(claims["exp"]))

    async def current(self, store: Store, token: str | None) -> Session | None:
        """The session of a cookie value, if it is valid and its user still stands behind it."""
        if not token or not token.isascii():  # a cookie that is not UTF-8: lone surrogates
            return None
        session = self.verify(token)
        if session is None:
            return None
        user = await store.get_user(session.email)
        if (user is None or user.merchant_id != session.merchant_id
                or user.role != session.role or session.issued_at <= user.sessions_after):
            return None
        return session


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: object) -> bool:
    """Constant-time comparison of a CSRF token; empty or missing never matches."""
    # Ours are ASCII; anything else (a cookie or field that was not UTF-8) can't even encode.
    if (not expected or not isinstance(given, str) or not given
            or not expected.isascii() or not given.isascii()):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def same_origin(request: web.Request, public_url: str) -> bool:
    """False when the browser says the request comes from another origin.

    Browsers send ``Origin`` with every POST; a request without one (an old browser, a
    script) is left to the CSRF token alone. ``null`` (a sandboxed or privacy-stripped
    origin) is refused.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    public = urlsplit(public_url)
    allowed = {f"{public.scheme}://{public.netloc}", f"{request.scheme}://{request.host}"}
    return origin in allowed


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a dashboard path of ours, never another site."""
    if value and _NEXT.fullmatch(value) and "/." not in value:  # no dot-segments
        return value
    return "/dashboard"


def client_address(request: web.Request, trust_forwarded: bool) -> str:
    """The address a login attempt counts against.

    Behind our own proxy (``server.trust_forwarded``) that is the last X-Forwarded-For
    entry, the one the proxy added for the peer it saw: the entries before it are whatever
    the client sent, and taking the first would let a client pick a new address for every
    attempt. (The share link takes the first entry: there a forged one only mislabels the
    sender's own click.) Otherwise, the peer's address.
    """
    if trust_forwarded:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        if forwarded:
            last = forwarded[-1].rsplit(",", 1)[-1].strip()
            if last:
                return last
    return request.remote or ""
