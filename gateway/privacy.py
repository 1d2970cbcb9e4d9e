"""Client addresses are kept only as salted hashes: enough to spot repeats, never the IP."""

from __future__ import annotations

import hashlib

__all__ = ["IpHasher"]


class IpHasher:
    _MAX_REMEMBERED = 10_000

    def __init__(self, salt: str) -> None:
        self._key = hashlib.blake2b(salt.encode(), digest_size=32).digest()
        # Recent addresses and their hashes: shoppers behind one carrier NAT repeat a lot.
        # Held in memory only, like the request itself; never stored or logged.
        self._recent: dict[str, str] = {}

    def __call__(self, address: str) -> str:
        found = self._recent.get(address)
        if found is None:
            # Keyed BLAKE2b: a salted hash that can't be reversed by hashing every IPv4
            # address without the salt.
            found = hashlib.blake2b(address.encode(), key=self._key, digest_size=12).hexdigest()
            if len(self._recent) >= self._MAX_REMEMBERED:
                self._recent.clear()
            self._recent[address] = found
        return found
