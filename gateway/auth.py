"""JWT bearer tokens: ``sub`` is the merchant, ``role`` what they may do."""

from __future__ import annotations

import time
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
    algorithm = "HS256"

    def __init__(self, secret: str, audience: str) -> None:
        self._secret = secret
        self.audience = audience

    def mint(self, merchant_id: str, role: Role, ttl_seconds: int) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        now = int(time.time())
        claims = {"sub": merchant_id, "role": role, "aud": self.audience,
                  "iat": now, "exp": now + ttl_seconds}
        return jwt.encode(claims, self._secret, algorithm=self.algorithm)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                audience=self.audience,
                                options={"require": ["sub", "role", "aud", "exp"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is not valid") from None
        role, sub = claims["role"], claims["sub"]
        if role not in ROLES or not isinstance(sub, str) or not sub:
            raise AuthError("invalid_token", "the token's role or subject is not valid")
        return Principal(merchant_id=sub, role=role)
