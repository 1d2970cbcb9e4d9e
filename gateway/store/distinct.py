"""Merging many visitor sketches into distinct counts, for reports (numpy, vectorised).

A report may merge thousands of cells (see sketch.py for what a sketch is), so the work is
numpy's: a few calls per group. Only reports import this: the click writer process, which
only adds to sketches, never loads numpy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

import numpy as np
import numpy.typing as npt

from .sketch import DENSE as _DENSE
from .sketch import HASH_BITS_LEFT as _Q
from .sketch import LOW_BITS as _LOW_BITS
from .sketch import REGISTERS as _M
from .sketch import SPARSE as _SPARSE
from .sketch import Count

__all__ = ["merge_counts"]

_ALPHA_INF = 1 / (2 * math.log(2))


def merge_counts(cells: Iterable[tuple[Hashable, bytes]]) -> dict[Hashable, Count]:
    """The distinct count of each group from its cells' sketches ((group, sketch) pairs).

    A report may merge thousands of cells, so the work is numpy's, a few calls per group:
    a group whose cells are all exact gets its exact count (distinct hashes of the sorted
    union); any other gets its dense cells' registers, maxed, raised by its exact cells'
    hashes, then estimated.
    """
    parts: dict[Hashable, tuple[list[bytes], list[bytes], list[bytes]]] = {}
    for group, sketch in cells:
        dense, sparse, exact = parts.setdefault(group, ([], [], []))
        tag = sketch[:1]
        if tag == _DENSE:
            dense.append(sketch)
        elif tag == _SPARSE:
            sparse.append(sketch[1:])
        elif len(sketch) > 1:
            exact.append(sketch)
    return {group: _count(dense, sparse, exact)
            for group, (dense, sparse, exact) in parts.items()}


def _count(dense: list[bytes], sparse: list[bytes], exact: list[bytes]) -> Count:
    # Each sketch keeps its one-byte tag: joined, the tags are dropped by a strided view.
    hashes = (np.frombuffer(b"".join(s[1:] for s in exact), dtype="<u8") if exact
              else np.zeros(0, dtype=np.uint64))
    if not dense and not sparse:
        if len(hashes) < 2:
            return Count(len(hashes), exact=True)
        ordered = np.sort(hashes)
        return Count(int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1, exact=True)
    if dense:
        rows = np.frombuffer(b"".join(dense), dtype=np.uint8).reshape(len(dense), _M + 1)
        registers = rows[:, 1:].max(axis=0)
    else:
        registers = np.zeros(_M, dtype=np.uint8)
    if sparse:
        # (register << 6 | value) in 3 big-endian bytes per pair.
        raw = np.frombuffer(b"".join(sparse), dtype=np.uint8).reshape(-1, 3).astype(np.intp)
        words = raw[:, 0] << 16 | raw[:, 1] << 8 | raw[:, 2]
        np.maximum.at(registers, words >> 6, (words & 63).astype(np.uint8))
    if len(hashes):
        np.maximum.at(registers, (hashes >> np.uint64(_Q)).astype(np.intp), _ranks(hashes))
    return Count(_estimate(registers), exact=False)


# Leading zeros of a 16-bit value, for the vectorised rank: table[v] for v in 0..65535.
_CLZ16 = (16 - np.floor(np.log2(np.maximum(np.arange(1 << 16), 1))).astype(np.int64) - 1)
_CLZ16[0] = 16


def _ranks(hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Each hash's register rank (as sketch.register), 16 bits at a time through a table."""
    low = hashes & np.uint64(_LOW_BITS)
    zeros = np.zeros(len(low), dtype=np.int64)
    left = np.full(len(low), True)
    shift = _Q
    while shift > 0 and left.any():
        take = min(16, shift)
        shift -= take
        chunk = ((low[left] >> np.uint64(shift)) & np.uint64((1 << take) - 1)).astype(np.intp)
        found = _CLZ16[chunk] - (16 - take)
        zeros[left] += found
        left[left] = found == take
    return (zeros + 1).astype(np.uint8)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3


def _estimate(registers: npt.NDArray[np.uint8]) -> int:
    """Ertl's improved raw estimator over the register histogram (algorithm 6)."""
    histogram = np.bincount(registers, minlength=_Q + 2)
    z = _M * _tau(1.0 - histogram[_Q + 1] / _M)
    for k in range(_Q, 0, -1):
        z = 0.5 * (z + histogram[k])
    z += _M * _sigma(histogram[0] / _M)
    return round(_ALPHA_INF * _M * _M / z)
