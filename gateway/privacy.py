"""Client addresses are kept only as salted hashes: enough to spot repeats, never the IP."""

from __future__ import annotations

import hashlib

__all__ = ["IpHasher"]


class IpHasher(dict[str, str]):
    """Client address -> its salted hash: ``hasher[address]``.

    A dict that hashes on a miss, so a repeat (shoppers behind one carrier NAT repeat a lot)
    is a plain dict lookup, in C, with no Python frame: the share link pays for every
    frame. Held in memory only, like the request itself; never stored or logged.
    """

    _MAX_REMEMBERED = 10_000

    def __init__(self, salt: str) -> None:
        super().__init__()
        self._key = hashlib.blake2b(salt.encode(), digest_size=32).digest()

    def __missing__(self, address: str) -> str:
        # Keyed BLAKE2b: a salted hash that can't be reversed by hashing every IPv4 address
        # without the salt.
        found = hashlib.blake2b(address.encode(), key=self._key, digest_size=12).hexdigest()
        if len(self) >= self._MAX_REMEMBERED:
            self.clear()
        self[address] = found
        return found
