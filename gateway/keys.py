"""Secrets the gateway needs before its first request: the token key and the IP salt.

A value set in settings wins; otherwise one is generated once into the data directory
(mode 0600) so that tokens and visitor hashes survive restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .settings import ConfigError, Settings

__all__ = ["auth_secret", "ip_salt"]


def _generated(path: Path) -> str:
    try:
        return _stored(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a name of our own, then linked into place: ``serve --workers N``
    # starts N processes at once, and one that found the file half-written (created, its
    # value not in yet) would run with an empty secret of its own: tokens signed with an
    # empty key, and visitor hashes that differ from the other workers'.
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
            fh.flush()
            os.fsync(fh.fileno())
        os.link(draft, path)
    except FileExistsError:  # another process won the race: use theirs
        pass
    except OSError as exc:  # a full disk, a data directory we may not write: say which
        raise ConfigError(f"cannot make {path}: {exc.strerror or exc}") from exc
    finally:
        draft.unlink(missing_ok=True)  # never a half-written draft left behind
    return _stored(path)


def _stored(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{path} is empty: delete it and start again to make a new one")
    return value


def auth_secret(settings: Settings) -> str:
    return str(settings["auth.secret"]) or _generated(settings.data_dir / "auth.secret")


def ip_salt(settings: Settings) -> str:
    return str(settings["privacy.ip_salt"]) or _generated(settings.data_dir / "ip.salt")
