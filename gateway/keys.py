"""Secrets the gateway needs before its first request: the token key and the IP salt.

A value set in settings wins; otherwise one is generated once into the data directory
(mode 0600) so that tokens and visitor hashes survive restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .settings import Settings

__all__ = ["auth_secret", "ip_salt"]


def _generated(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def auth_secret(settings: Settings) -> str:
    return str(settings["auth.secret"]) or _generated(settings.data_dir / "auth.secret")


def ip_salt(settings: Settings) -> str:
    return str(settings["privacy.ip_salt"]) or _generated(settings.data_dir / "ip.salt")
