"""Distinct visitors over any range: a set of visitor hashes, or a HyperLogLog, per cell.

Unique visitors can't be summed: a visitor who came Monday and Tuesday is one visitor of the
week. So every rollup cell (see rollup.py: a day or a month, per product, platform and
channel, or with some of those summed) keeps a *sketch* of its visitors, and a report
merges the sketches of the cells its range and grouping cover. A merge is a set union, so
cells may even overlap and a replayed click changes nothing.

A sketch is one of three things, told apart by its first byte:

- **exact**: the sorted 64-bit hashes of its visitors (little-endian), while there are at
  most ``EXACT_MAX`` of them (2 KiB);
- **HyperLogLog**: 2^12 registers (Flajolet et al., 2007) once there are more, read with
  Ertl's improved estimator (O. Ertl, "New cardinality estimation algorithms for
  HyperLogLog sketches", 2017, arXiv:1702.01284, algorithm 6), which is unbiased from the
  smallest to the largest counts with no empirical correction tables. Stored *sparse*, as
  3-byte (register, value) pairs, while fewer than a third of the registers are set, then
  *dense*, one byte per register (4 KiB): a report over a year reads thousands of
  mid-sized cells, and their bytes are its cost.

A merged count is exact when every cell it merges is exact, so **any figure of at most
EXACT_MAX visitors is exact** (each of its cells has at most that many), and so are larger
ones whose cells are all small (a small product over a long range). Otherwise it is an
estimate with a relative standard error of 1.04/sqrt(4096) = 1.63%: 95% of estimates lie
within 3.2% of the true count (1.96 standard errors), and ``Count.error`` says how many
visitors that is.

Hashes are BLAKE2b-64 of the visitor id (the ``ll_v`` cookie, itself a random token): two
visitors share a hash with probability ~n^2/2^65, about one in 10^8 for a million visitors.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DENSE", "EXACT", "EXACT_MAX", "HASH_BITS_LEFT", "LOW_BITS", "REGISTERS",
           "RELATIVE_ERROR_95", "SKETCH_BITS", "SPARSE", "SPARSE_MAX", "Count", "add_hashes",
           "merge_sketches", "new_sketch", "register", "visitor_hash"]

#: Registers: 2^SKETCH_BITS. 12 bits: 4 KiB a dense sketch, 1.63% standard error.
SKETCH_BITS = 12
REGISTERS = _M = 1 << SKETCH_BITS
#: The hash bits a register's value is taken from.
HASH_BITS_LEFT = _Q = 64 - SKETCH_BITS
#: Hashes kept exactly before a cell turns into registers (8 bytes each: 2 KiB at most).
EXACT_MAX = 256
#: Registers set before a sparse sketch turns dense (3 bytes each: its size is then 4 KiB).
SPARSE_MAX = _M // 3
#: Half the width of a 95% confidence interval, relative to the estimate (1.96 sigma).
RELATIVE_ERROR_95 = round(1.96 * 1.04 / math.sqrt(_M), 4)

#: A sketch's first byte: which kind it is (reports read it: see distinct.py).
EXACT, DENSE, SPARSE = _EXACT, _DENSE, _SPARSE = b"\x01", b"\x02", b"\x03"
_RANK_BITS = 6  # a sparse pair: register << 6 | value, in 3 big-endian bytes
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


def _registers(hashes: Iterable[int], registers: dict[int, int]) -> dict[int, int]:
    for value in hashes:
        index, rank = register(value)
        if rank > registers.get(index, 0):
            registers[index] = rank
    return registers


def _hll(registers: dict[int, int]) -> bytes:
    """Registers as the smaller of the sparse and the dense form."""
    if len(registers) <= SPARSE_MAX:
        return _SPARSE + b"".join((index << _RANK_BITS | rank).to_bytes(3, "big")
                                  for index, rank in sorted(registers.items()))
    dense = bytearray(_M)
    for index, rank in registers.items():
        dense[index] = rank
    return _DENSE + bytes(dense)


def _words(hashes: Iterable[int]) -> array[int]:
    words = array("Q", hashes)
    if sys.byteorder == "big":  # stored little-endian whatever the machine
        words.byteswap()
    return words


def add_hashes(sketch: bytes | None, hashes: Iterable[int]) -> bytes:
    """``sketch`` (None: empty) with more visitors; stays exact while it can.

    Runs in the record transaction, once per cell a batch touches: plain Python, since a
    batch adds a handful of hashes to each cell.
    """
    tag = sketch[:1] if sketch else _EXACT
    if tag == _DENSE:
        assert sketch is not None
        registers = bytearray(sketch[1:])
        for index, rank in (register(value) for value in hashes):
            if rank > registers[index]:
                registers[index] = rank
        return _DENSE + bytes(registers)
    if tag == _SPARSE:
        assert sketch is not None
        pairs = {}
        for at in range(1, len(sketch), 3):
            word = int.from_bytes(sketch[at:at + 3], "big")
            pairs[word >> _RANK_BITS] = word & ((1 << _RANK_BITS) - 1)
        return _hll(_registers(hashes, pairs))
    union = set(_words(sketch[1:]) if sketch else ())
    union.update(hashes)
    if len(union) > EXACT_MAX:
        return _hll(_registers(union, {}))
    return _EXACT + _words(sorted(union)).tobytes()


def _hashes(sketch: bytes) -> array[int]:
    """An exact sketch's hashes."""
    words = array("Q", sketch[1:])
    if sys.byteorder == "big":
        words.byteswap()
    return words


def merge_sketches(sketch: bytes | None, other: bytes) -> bytes:
    """The union of two sketches (None: empty), as a report would merge them: an import of
    the days whose raw clicks are pruned brings their cells whole (gateway/transfer.py)."""
    if not sketch:
        return other
    if other[:1] == _EXACT:
        return add_hashes(sketch, _hashes(other))
    if sketch[:1] == _EXACT:
        return add_hashes(other, _hashes(sketch))
    registers: dict[int, int] = {}
    for hll in (sketch, other):
        if hll[:1] == _DENSE:
            pairs: Iterable[tuple[int, int]] = enumerate(hll[1:])
        else:
            words = (int.from_bytes(hll[at:at + 3], "big") for at in range(1, len(hll), 3))
            pairs = ((word >> _RANK_BITS, word & ((1 << _RANK_BITS) - 1)) for word in words)
        for index, rank in pairs:
            if rank > registers.get(index, 0):
                registers[index] = rank
    return _hll(registers)


@dataclass(frozen=True, slots=True)
class Count:
    """A merged distinct count: ``value`` visitors, exact or within ``error`` (95%)."""

    value: int
    exact: bool

    @property
    def error(self) -> int:
        """Half the 95% confidence interval, in visitors (0 when exact)."""
        return 0 if self.exact else math.ceil(self.value * RELATIVE_ERROR_95)


