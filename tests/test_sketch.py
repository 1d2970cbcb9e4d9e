"""Visitor sketches: exact while small, HyperLogLog within its stated error, merges as unions."""

from __future__ import annotations

import random

import pytest

from gateway.store.distinct import merge_counts
from gateway.store.sketch import (
    EXACT_MAX,
    RELATIVE_ERROR_95,
    SPARSE_MAX,
    add_hashes,
    visitor_hash,
)


def _hashes(n: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.getrandbits(64) for _ in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 100, EXACT_MAX])
def test_small_counts_are_exact_however_the_cells_split(n: int) -> None:
    hashes = _hashes(n, seed=n)
    # The same visitors spread over three overlapping cells (a visitor back on other days).
    cells = [add_hashes(None, hashes[: n // 2 + 1]), add_hashes(None, hashes[n // 3:]),
             add_hashes(None, hashes[::2])]
    found = merge_counts([("g", cell) for cell in cells])["g"]
    assert (found.value, found.exact, found.error) == (n, True, 0)


def test_a_visitor_added_twice_counts_once() -> None:
    once = add_hashes(None, [visitor_hash("AbCdEfGh12345678")])
    again = add_hashes(once, [visitor_hash("AbCdEfGh12345678")])
    assert again == once
    assert merge_counts([("g", once), ("g", again)])["g"].value == 1


@pytest.mark.parametrize("n", [EXACT_MAX + 1, 1000, SPARSE_MAX + 1, 20_000, 300_000])
def test_large_counts_are_within_the_stated_error(n: int) -> None:
    """Each size from 20 seeds: the estimates stay within the 95% bound about as often as
    stated (at least 80% of them here: 20 draws), and never twice beyond it."""
    inside = 0
    for seed in range(20 if n < 100_000 else 4):
        hashes = _hashes(n, seed)
        # Built the way the record transaction builds it: batch by batch.
        sketch: bytes | None = None
        for start in range(0, n, 997):
            sketch = add_hashes(sketch, hashes[start:start + 997])
        assert sketch is not None
        found = merge_counts([("g", sketch)])["g"]
        assert not found.exact and found.error == -(-found.value * RELATIVE_ERROR_95 // 1)
        deviation = abs(found.value - n) / n
        assert deviation < 2 * RELATIVE_ERROR_95, (n, seed, found.value)
        inside += deviation <= RELATIVE_ERROR_95
    assert inside >= (16 if n < 100_000 else 3)


def test_merged_cells_estimate_like_one_cell_of_their_union() -> None:
    """A report merging exact, sparse and dense cells gets the registers one sketch of all
    those visitors would have: the same estimate."""
    a, b, c = _hashes(200, 1), _hashes(900, 2), _hashes(6000, 3)
    shared = a[:50] + b[:50]
    cells = [add_hashes(None, a), add_hashes(None, b), add_hashes(None, c + shared)]
    assert [cell[:1] for cell in cells] == [b"\x01", b"\x03", b"\x02"]  # exact, sparse, dense
    merged = merge_counts([("g", cell) for cell in cells])["g"]
    whole = merge_counts([("g", add_hashes(None, a + b + c))])["g"]
    assert merged == whole and not merged.exact


def test_groups_are_counted_apart() -> None:
    found = merge_counts([("x", add_hashes(None, [1, 2, 3])), ("y", add_hashes(None, [3])),
                          ("x", add_hashes(None, [3, 4]))])
    assert {g: c.value for g, c in found.items()} == {"x": 4, "y": 1}
