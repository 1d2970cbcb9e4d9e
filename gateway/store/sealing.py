"""How both engines keep the merchants' secrets sealed (gateway/secretbox.py says why).

Two places hold secrets: ``entries.secrets`` (the WeCom corp id, secret, callback token and
EncodingAESKey, as one JSON object) and ``app_credentials.secret`` (a WeChat app secret).
Each is stored as one sealed string; a row written by a version before sealing holds its
plain value (a JSON object, a plain string) until ``reseal`` seals it, which the engines do
when they open storage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..secretbox import SecretBox, is_sealed

__all__ = ["credential_place", "entry_place", "needs_reseal", "open_credential_secret",
           "open_entry_secrets", "resealed_credentials", "resealed_entries",
           "seal_credential_secret", "seal_entry_secrets"]


def entry_place(merchant_id: str) -> str:
    return f"entries/{merchant_id}"


def credential_place(merchant_id: str, platform: str) -> str:
    return f"app_credentials/{merchant_id}/{platform}"


def seal_entry_secrets(box: SecretBox, merchant_id: str, secrets: Mapping[str, str]) -> str:
    return box.seal(json.dumps(dict(secrets), ensure_ascii=False), entry_place(merchant_id))


def open_entry_secrets(box: SecretBox, merchant_id: str, stored: Any) -> dict[str, str]:
    """The secrets of a stored entry: sealed (a string), or plain from before (an object)."""
    if isinstance(stored, str) and is_sealed(stored):
        opened: dict[str, str] = json.loads(box.open(stored, entry_place(merchant_id)))
        return opened
    return dict(stored)


def seal_credential_secret(box: SecretBox, merchant_id: str, platform: str, secret: str) -> str:
    return box.seal(secret, credential_place(merchant_id, platform))


def open_credential_secret(box: SecretBox, merchant_id: str, platform: str, stored: str) -> str:
    return box.open(stored, credential_place(merchant_id, platform))


def needs_reseal(box: SecretBox, stored: Any, *, only_plain: bool) -> bool:
    """Whether a stored value is plain (always re-sealed) or, unless ``only_plain``, sealed
    under a key other than the current one."""
    if not is_sealed(stored):
        return True
    return not only_plain and not box.is_current(stored)


def resealed_entries(box: SecretBox, rows: Iterable[tuple[str, Any]], *, only_plain: bool,
                     ) -> list[tuple[str, str]]:
    """(new sealed value, merchant id) for each entry row (merchant id, stored secrets as
    decoded JSON) that needs sealing again: the parameters of an UPDATE."""
    return [(seal_entry_secrets(box, merchant, open_entry_secrets(box, merchant, stored)),
             merchant)
            for merchant, stored in rows if needs_reseal(box, stored, only_plain=only_plain)]


def resealed_credentials(box: SecretBox, rows: Iterable[tuple[str, str, str]], *,
                         only_plain: bool) -> list[tuple[str, str, str]]:
    """(new sealed secret, merchant id, platform) for each app_credentials row (merchant id,
    platform, stored secret) that needs sealing again."""
    return [(seal_credential_secret(box, merchant, platform,
                                    open_credential_secret(box, merchant, platform, stored)),
             merchant, platform)
            for merchant, platform, stored in rows
            if needs_reseal(box, stored, only_plain=only_plain)]
