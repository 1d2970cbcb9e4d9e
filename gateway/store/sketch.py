"""Distinct visitors over any range: a set of visitor hashes, or a HyperLogLog, per cell.

Unique visitors can't be summed: a visitor who came Monday and Tuesday is one visitor of the
week. So every rollup cell (see rollup.py: a day or a month, per product, platform and
channel, or with some of those summed) keeps a *sketch* of its visitors, and a report
merges the sketches of the cells its range and grouping cover. A merge is a set union, so
cells may even overlap and a replayed click changes nothing.

A sketch is one of two things, told apart by its first byte:

- **exact**: the sorted 64-bit hashes of its visitors, while there are at most
  ``EXACT_MAX`` of them (2 KiB);
- **HyperLogLog**: 2^12 one-byte registers (4 KiB) once there are more (Flajolet et al.,
  2007), read with Ertl's improved estimator (O. Ertl, "New cardinality estimation
  algorithms for HyperLogLog sketches", 2017, arXiv:1702.01284, algorithm 6), which is
  unbiased from the smallest to the largest counts with no empirical correction tables.

A merged count is exact when every cell it merges is exact, so **any figure of at most
EXACT_MAX visitors is exact** (each of its cells has at most that many), and so are larger
ones whose cells are all small (a small product over a long range). Otherwise it is an
estimate with a relative standard error of 1.04/sqrt(4096) = 1.63%: 95% of estimates lie
within 3.25% of the true count, and ``error_bound`` says how many visitors that is.

Hashes are BLAKE2b-64 of the visitor id (the ``ll_v`` cookie, itself a random token): two
visitors share a hash with probability ~n^2/2^65, about one in 10^8 for a million visitors.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DENSE", "EXACT", "EXACT_MAX", "HASH_BITS_LEFT", "LOW_BITS", "REGISTERS",
           "RELATIVE_ERROR_95", "SKETCH_BITS", "Count", "add_hashes", "new_sketch",
           "register", "visitor_hash"]

#: Registers: 2^SKETCH_BITS. 12 bits: 4 KiB a dense sketch, 1.63% standard error.
SKETCH_BITS = 12
REGISTERS = _M = 1 << SKETCH_BITS
#: The hash bits a register's value is taken from.
HASH_BITS_LEFT = _Q = 64 - SKETCH_BITS
#: Hashes kept exactly before a cell turns into registers (8 bytes each: 2 KiB at most).
EXACT_MAX = 256
#: Half the width of a 95% confidence interval, relative to the estimate (1.96 sigma).
RELATIVE_ERROR_95 = round(1.96 * 1.04 / math.sqrt(_M), 4)

#: A sketch's first byte: which of the two it is (reports read it: see distinct.py).
EXACT, DENSE = _EXACT, _DENSE = b"\x01", b"\x02"
LOW_BITS = _LOW_BITS = (1 << _Q) - 1


def visitor_hash(visitor: str) -> int:
    """The 64-bit hash a sketch keeps for a visitor id."""
    return int.from_bytes(hashlib.blake2b(visitor.encode(), digest_size=8).digest(), "little")


def new_sketch() -> bytes:
    """The sketch of no visitors."""
    return _EXACT


def register(value: int) -> tuple[int, int]:
    """(register index, rank): the top bits choose the register, the rank is one more than
    the leading zeros of the rest (1 to _Q + 1)."""
    return value >> _Q, _Q - (value & _LOW_BITS).bit_length() + 1


def _dense(hashes: Iterable[int], registers: bytearray | None = None) -> bytes:
    regs = registers if registers is not None else bytearray(_M)
    for value in hashes:
        index, rank = register(value)
        if rank > regs[index]:
            regs[index] = rank
    return _DENSE + bytes(regs)


def add_hashes(sketch: bytes | None, hashes: Iterable[int]) -> bytes:
    """``sketch`` (None: empty) with more visitors; stays exact while it can.

    Runs in the record transaction, once per cell a batch touches: plain Python, since a
    batch adds a handful of hashes to each cell.
    """
    if sketch and sketch[:1] == _DENSE:
        return _dense(hashes, bytearray(sketch[1:]))
    known = array("Q", sketch[1:]) if sketch else array("Q")
    union = set(known)
    union.update(hashes)
    if len(union) > EXACT_MAX:
        return _dense(union)
    return _EXACT + array("Q", sorted(union)).tobytes()


@dataclass(frozen=True, slots=True)
class Count:
    """A merged distinct count: ``value`` visitors, exact or within ``error`` (95%)."""

    value: int
    exact: bool

    @property
    def error(self) -> int:
        """Half the 95% confidence interval, in visitors (0 when exact)."""
        return 0 if self.exact else math.ceil(self.value * RELATIVE_ERROR_95)


