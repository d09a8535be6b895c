"""Digests of files and bytes, and a counter-based random stream that never changes.

SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) is written out here instead of using numpy's or torch's generators, whose
streams may change between versions: a seeded validation split or an evaluation
binarization must give the same bits on every machine, device and library version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, lambda: hashlib.new(algorithm, usedforsecurity=False))
    return digest.hexdigest()


def bytes_digest(data: bytes | memoryview, algorithm: str = "sha256") -> str:
    """Hex digest of bytes in memory."""
    return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def splitmix64(seed: int, n: int) -> np.ndarray:
    """The first ``n`` outputs of SplitMix64 seeded with ``seed``, as uint64, shape (n,)."""
    return splitmix64_at(seed, np.arange(n, dtype=np.uint64))


def splitmix64_at(seed: int, positions: np.ndarray) -> np.ndarray:
    """Outputs number ``positions`` (0-based, any shape) of SplitMix64 seeded with ``seed``:
    the stream is counter-based, so any part of it is computed without the rest."""
    z = np.uint64(seed % 2**64) + _GAMMA * (positions.astype(np.uint64) + np.uint64(1))
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, n: int) -> np.ndarray:
    """``n`` float64 uniforms on [0, 1) from SplitMix64: the top 53 bits of each output."""
    return uniforms_at(seed, np.arange(n, dtype=np.uint64))


def uniforms_at(seed: int, positions: np.ndarray) -> np.ndarray:
    """The uniforms numbered ``positions`` of :func:`uniforms`'s stream (same shape)."""
    return (splitmix64_at(seed, positions) >> np.uint64(11)).astype(np.float64) * 2.0**-53
