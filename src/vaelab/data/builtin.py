"""Split the built-in datasets into train / valid / train+valid / test.

MNIST uses the standard 50k/10k/10k split of the classic pickle: valid is the last 10k
of the original 60k training set, whatever the source (pickle or IDX), so both sources
give identical tensors. Fashion-MNIST has no official validation set: 10k training
images are drawn with SplitMix64 seeded by ``valid_seed`` (version-independent, see
:mod:`.hashing`), and train and valid each keep the original file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cache import cache_dir
from .catalog import DatasetSpec
from .dataset import ArrayDataset, make_dataset
from .download import Opener
from .errors import DataError
from .hashing import splitmix64
from .sources import describe, fetch, find, not_found_error, read_arrays, verify

BUILTIN_SPLITS = ("train", "valid", "train+valid", "test")


def valid_indices(spec: DatasetSpec, n_train: int, valid_seed: int) -> np.ndarray:
    """Sorted indices of the validation rows within the full training set."""
    if not spec.seeded_valid:
        return np.arange(n_train - spec.n_valid, n_train)
    order = np.argsort(splitmix64(valid_seed, n_train), kind="stable")
    return np.sort(order[: spec.n_valid])


def _select(spec: DatasetSpec, arrays: dict[str, np.ndarray], split: str,
            valid_seed: int) -> tuple[np.ndarray, np.ndarray]:
    if split == "test":
        return arrays["x_test"], arrays["y_test"]
    x, y = arrays["x_train"], arrays["y_train"]
    if split == "train+valid":
        return x, y
    is_valid = np.zeros(len(x), dtype=bool)
    is_valid[valid_indices(spec, len(x), valid_seed)] = True
    keep = is_valid if split == "valid" else ~is_valid
    return x[keep], y[keep]


def fetch_builtin(spec: DatasetSpec, *, data_dir: str | Path | None = None,
                  opener: Opener | None = None, progress: bool = True) -> Path:
    """The directory of a verified copy: one in ``data_dir``, else one put in the cache."""
    loc = find(spec, data_dir)
    if loc is not None and loc.origin == "data_dir":
        verify(spec, loc)
        return loc.paths[0].parent
    return fetch(spec, cache_dir() / spec.name, opener=opener, progress=progress)


def load_builtin(spec: DatasetSpec, split: str, *, data_dir: str | Path | None = None,
                 download: bool = False, valid_seed: int = 0,
                 opener: Opener | None = None) -> ArrayDataset:
    """Load one split of a built-in dataset, fetching it first if ``download``."""
    if split not in BUILTIN_SPLITS:
        raise DataError(f"unknown split {split!r} for {spec.name}; use one of "
                        f"{', '.join(BUILTIN_SPLITS)}")
    loc = find(spec, data_dir)
    if loc is None:
        if not download:
            raise not_found_error(spec, data_dir)
        fetch_builtin(spec, data_dir=data_dir, opener=opener)
        loc = find(spec, data_dir)
        if loc is None:  # pragma: no cover - fetch_builtin() either fills the cache or raises
            raise not_found_error(spec, data_dir)
    arrays = read_arrays(spec, loc, {"test"} if split == "test" else {"train"})
    x, y = _select(spec, arrays, split, valid_seed)
    return make_dataset(x, y, name=spec.name, split=split, source=describe(spec, loc),
                        what=spec.name)
