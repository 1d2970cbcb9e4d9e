"""JWT bearer tokens: ``sub`` is the merchant, ``role`` what they may do."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jwt

__all__ = ["ROLES", "AuthError", "Principal", "TokenService"]

Role = Literal["merchant", "marketing", "admin"]
ROLES: tuple[Role, ...] = ("merchant", "marketing", "admin")


class AuthError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    merchant_id: str
    role: Role

    @property
    def can_write(self) -> bool:
        """Marketing staff read figures; only merchants and admins change products."""
        return self.role in ("merchant", "admin")


class TokenService:
    """Mints and checks tokens; ``clock`` is where the time comes from (a test's own hand)."""

    algorithm = "HS256"

    def __init__(self, secret: str, audience: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.audience = audience
        self._clock = clock

    def mint(self, merchant_id: str, role: Role, ttl_seconds: int) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        now = int(self._clock())
        claims = {"sub": merchant_id, "role": role, "aud": self.audience,
                  "iat": now, "exp": now + ttl_seconds}
        return jwt.encode(claims, self._secret, algorithm=self.algorithm)

    def verify(self, token: str) -> Principal:
        # pyjwt checks the signature, the one algorithm, the audience and the claims'
        # presence; the expiry is checked here against ``clock``, by pyjwt's own rule.
        try:
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                audience=self.audience,
                                options={"require": ["sub", "role", "aud", "exp"],
                                         "verify_exp": False})
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is not valid") from None
        exp = claims["exp"]
        # An integer only: JSON lets NaN and Infinity through, and neither ever expires.
        if type(exp) is not int:
            raise AuthError("invalid_token", "the token's expiry is not a whole number")
        # RFC 7519 4.1.4: accepted only *before* exp; at exp the token has expired.
        if exp <= self._clock():
            raise AuthError("token_expired", "the token has expired")
        role, sub = claims["role"], claims["sub"]
        if role not in ROLES or not isinstance(sub, str) or not sub:
            raise AuthError("invalid_token", "the token's role or subject is not valid")
        return Principal(merchant_id=sub, role=role)
