"""A seeded train/valid/test split of one array, by row numbers (no copy of the data).

A file that holds one array (``x``, optional ``y``) has no splits of its own; this cuts it
with one permutation of the rows, drawn from ``numpy.random.default_rng(seed)`` (PCG64,
the same on every platform and numpy version since 1.17), in the shares
``data.split_fractions`` gives. Row numbers are sorted within each split, so a memory-mapped
file is read forwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import DataError

SPLIT_ORDER = ("train", "valid", "test")


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """(train, valid, test) row counts of ``n`` rows: valid and test get ``floor(n * f)``,
    train the rest, so every row is in exactly one split."""
    check_fractions(fractions)
    n_valid, n_test = (math.floor(n * f) for f in fractions[1:])
    sizes = (n - n_valid - n_test, n_valid, n_test)
    for name, f, size in zip(SPLIT_ORDER, fractions, sizes, strict=True):
        if f > 0 and size == 0:
            raise DataError(f"{n} rows give the {name} split (data.split_fractions share "
                            f"{f:g}) no row; use more data, a larger share, or share 0")
    return sizes


def check_fractions(fractions: Sequence[float]) -> None:
    """Three shares (train, valid, test), each in [0, 1], summing to 1, train above 0."""
    if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions) \
            or abs(sum(fractions) - 1) > 1e-6 or fractions[0] <= 0:
        raise DataError(f"data.split_fractions={list(fractions)} must be three shares (train, "
                        f"valid, test) in [0, 1] summing to 1, with train above 0, e.g. "
                        f"[0.8, 0.1, 0.1]")


def split_rows(n: int, split: str, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Sorted row numbers (int64) of ``split`` ("train", "valid", "test", "train+valid" or
    "all") in a seeded split of ``n`` rows; the same arguments give the same rows."""
    if split == "all":
        return np.arange(n, dtype=np.int64)
    names = split.split("+")
    if split != "train+valid" and split not in SPLIT_ORDER:
        raise DataError(f"unknown split {split!r}; use train, valid, test, train+valid or all")
    sizes = split_sizes(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum((0, *sizes))
    parts = [perm[bounds[i]:bounds[i + 1]] for i, name in enumerate(SPLIT_ORDER) if name in names]
    rows = np.sort(np.concatenate(parts)).astype(np.int64)
    if rows.size == 0:
        raise DataError(f"the {split} split is empty (data.split_fractions={list(fractions)}); "
                        f"give it a share above 0 or set its data.*_split to ''")
    return rows
