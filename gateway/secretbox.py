"""Secrets at rest: the merchants' WeCom and WeChat secrets sealed with AES-256-GCM.

A merchant's WeCom secret, callback token and EncodingAESKey, and a mini-program's app
secret, let whoever holds them act as the merchant on WeChat and WeCom. The database (and
every backup and export of it) holds them only sealed: ``llsec1:<key id>:<base64url of
nonce + ciphertext + tag>``. The key lives apart from the data: ``secrets.key`` in
settings, or a key file (generated into the data directory when none is set, like the
token key in gateway/keys.py).

The key file holds one key a line, newest first: the first seals, every one opens. That is
how ``linkloop secrets rotate`` changes keys under running gateways: it writes the new key
first, re-seals every stored secret, then drops the old lines; a gateway meeting a key id
it doesn't hold, or about to seal, re-reads the file when it has changed.

Each value is sealed with its place (``entries/acme``) as associated data, so a sealed value
copied onto another merchant's row fails to open instead of lending them its secret.
AES-GCM from ``cryptography`` (already a dependency, for WeCom's callback envelope): the
standard authenticated cipher, nothing hand-made.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .settings import ConfigError, Settings
from .store.base import StoreError

__all__ = ["PREFIX", "SecretBox", "SecretsKeyError", "is_sealed", "key_id", "new_key",
           "parse_key", "read_key_file"]

PREFIX = "llsec1:"
_NONCE_BYTES = 12  # GCM's standard nonce; random per value (2^-32 collision odds at 2^32)


class SecretsKeyError(StoreError):
    """A stored secret can't be opened: its key is missing, or the value was tampered with."""


def new_key() -> str:
    """A fresh 256-bit key, as settings and key files hold it (URL-safe base64)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def parse_key(text: str, origin: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{origin}: a key is 32 bytes in URL-safe base64 (44 characters), "
                          "e.g. from `python3 -c 'import base64,os; "
                          "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'`")
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key: which key a sealed value needs, without revealing it."""
    return hashlib.sha256(b"linkloop-secrets-key:" + key).hexdigest()[:8]


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class SecretBox:
    """Seals and opens stored secrets with the deployment's keys (the first one seals)."""

    def __init__(self, keys: Sequence[bytes], *, key_file: Path | None = None,
                 ephemeral: bool = False) -> None:
        if not keys:
            raise ConfigError("no secrets key")
        self._keys = list(keys)
        self._by_id = {key_id(k): k for k in self._keys}
        self.key_file = key_file
        #: A box whose key dies with it (a store opened without one, in tests and tools):
        #: it never re-seals what it finds stored.
        self.ephemeral = ephemeral
        self._file_state = self._stat()

    # --- making one -----------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """``secrets.key`` (and ``secrets.previous_keys``), else the key file, generated
        into the data directory the first time."""
        if settings["secrets.key"]:
            keys = [parse_key(settings["secrets.key"], "secrets.key")]
            keys += [parse_key(k, "secrets.previous_keys")
                     for k in str(settings["secrets.previous_keys"]).split(",") if k.strip()]
            return cls(keys)
        path = (Path(settings["secrets.key_file"]) if settings["secrets.key_file"]
                else settings.data_dir / "secrets.key")
        _generate_key_file(path)
        return cls(read_key_file(path), key_file=path)

    @classmethod
    def ephemeral_box(cls) -> SecretBox:
        return cls([secrets.token_bytes(32)], ephemeral=True)

    def with_keys(self, extra: Iterable[bytes]) -> SecretBox:
        """This box, also opening with ``extra`` keys (an export from another deployment)."""
        box = SecretBox([*self._keys, *extra], key_file=self.key_file,
                        ephemeral=self.ephemeral)
        return box

    # --- the keys ---------------------------------------------------------------------------
    @property
    def current_id(self) -> str:
        self._refresh()
        return key_id(self._keys[0])

    @property
    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self._keys]

    def rotate_key_file(self) -> str:
        """Put a new key first in the key file (older keys still open); its id."""
        if self.key_file is None:
            raise ConfigError("secrets.key is set in settings: put the new key there and the "
                              "old one in secrets.previous_keys, then run this again")
        self._refresh()
        fresh = new_key()
        _write_key_file(self.key_file, [fresh, *(_encode(k) for k in self._keys)])
        self._refresh()
        return key_id(parse_key(fresh, str(self.key_file)))

    def retire_old_keys(self) -> list[str]:
        """Keep only the current key in the key file; the ids of the keys dropped."""
        if self.key_file is None:
            return []
        self._refresh()
        dropped = [key_id(k) for k in self._keys[1:]]
        _write_key_file(self.key_file, [_encode(self._keys[0])])
        self._refresh()
        return dropped

    def _stat(self) -> tuple[int, int] | None:
        if self.key_file is None:
            return None
        try:
            info = self.key_file.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _refresh(self) -> None:
        """Re-read the key file if it changed (``linkloop secrets rotate`` in another
        process). A stat, on the rare calls that seal or meet an unknown key."""
        if self.key_file is None:
            return
        state = self._stat()
        if state is None or state == self._file_state:
            return
        keys = read_key_file(self.key_file)
        self._keys = keys
        self._by_id.update({key_id(k): k for k in keys})
        self._file_state = state

    # --- sealing ----------------------------------------------------------------------------
    def seal(self, plaintext: str, place: str) -> str:
        """``plaintext`` sealed under the current key, bound to ``place`` (e.g. entries/acme)."""
        self._refresh()
        key = self._keys[0]
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), place.encode())
        return f"{PREFIX}{key_id(key)}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, place: str) -> str:
        """The plaintext of a sealed value; a plain value (stored by an older version, not
        yet sealed) as it is."""
        if not is_sealed(value):
            return value
        kid, _, body = value[len(PREFIX):].partition(":")
        key = self._by_id.get(kid)
        if key is None:
            self._refresh()
            key = self._by_id.get(kid)
        if key is None:
            where = f"secrets.key or {self.key_file}" if self.key_file else "secrets.key"
            raise SecretsKeyError(
                f"a secret stored for {place} is sealed with key {kid}, which this gateway "
                f"does not hold ({where}): restore that key, or set the secret again")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            opened = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], place.encode())
        except (ValueError, InvalidTag):
            raise SecretsKeyError(f"the secret stored for {place} fails its integrity check "
                                  "(changed, or copied from another row)") from None
        return opened.decode()

    def is_current(self, value: object) -> bool:
        """Sealed under the current key (else ``linkloop secrets rotate`` re-seals it)."""
        return is_sealed(value) and str(value)[len(PREFIX):].startswith(self.current_id + ":")


def _encode(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def read_key_file(path: Path) -> list[bytes]:
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets key file {path}: {exc.strerror}") from None
    keys = [parse_key(line, str(path)) for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ConfigError(f"the secrets key file {path} holds no key")
    return keys


def _generate_key_file(path: Path) -> None:
    """A first key, once; another process starting at the same moment keeps its own out."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key() + "\n")


def _write_key_file(path: Path, keys: Sequence[str]) -> None:
    """All or nothing: the new file is written beside the old one and renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{k}\n" for k in keys))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
