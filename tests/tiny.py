"""Tiny datasets and configs for fast end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaelab.config import Config, load_config


def make_npz(path: Path, *, n: int = 96, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0,
             scale: float = 1.0) -> Path:
    """Images in [0, scale] with a little structure, split into train/valid/test."""
    rng = np.random.default_rng(seed)
    protos = rng.random((4, *shape))
    labels = rng.integers(0, 4, size=n)
    x = np.clip(protos[labels] + 0.1 * rng.standard_normal((n, *shape)), 0, 1) * scale
    x = x.astype(np.float32)
    a, b = n // 2, 3 * n // 4
    np.savez(path, x_train=x[:a], y_train=labels[:a], x_valid=x[a:b], y_valid=labels[a:b],
             x_test=x[b:], y_test=labels[b:])
    return path


TINY_OVERRIDES = [
    "model.hidden=[16]", "model.latent_dim=2", "train.epochs=1", "train.batch_size=16",
    "train.progress=false", "eval.iw_samples=8", "eval.sample_chunk=4",
]


def tiny_config(data_path: Path, *extra: str) -> Config:
    return load_config(None, [f"data.name='{data_path}'", *TINY_OVERRIDES, *extra])
