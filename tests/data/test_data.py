"""The real datasets: MNIST from the cache, Fashion-MNIST from Debian (or the cache).

Each test skips, saying why, when its dataset is not on this machine; nothing is fetched.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import dataset_status, load_dataset
from vaelab.data.builtin import valid_indices
from vaelab.data.catalog import FASHION_MNIST
from vaelab.data.idx import encode_idx

# Class counts of the original 60k training and 10k test sets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def available(name: str) -> bool:
    return {s.name: s.available for s in dataset_status()}[name]


def skip_unless(name: str) -> None:
    if not available(name):
        pytest.skip(f"{name} is not on this machine; `vaelab data fetch {name}` puts it in "
                    f"the cache")


@pytest.fixture(scope="module")
def mnist() -> dict:
    skip_unless("mnist")
    return {split: load_dataset("mnist", split) for split in
            ("train", "valid", "train+valid", "test")}


@pytest.fixture(scope="module")
def fashion() -> dict:
    skip_unless("fashion-mnist")
    return {split: load_dataset("fashion-mnist", split) for split in
            ("train", "valid", "train+valid", "test")}


def assert_8bit_images(x: torch.Tensor) -> None:
    k = x * 255
    assert torch.equal(k, k.round()) and x.min() == 0 and x.max() == 1


# ---- MNIST ---------------------------------------------------------------------------------

def test_mnist_splits_shapes_and_labels(mnist: dict) -> None:
    sizes = {split: len(d) for split, d in mnist.items()}
    assert sizes == {"train": 50_000, "valid": 10_000, "train+valid": 60_000, "test": 10_000}
    for split, d in mnist.items():
        assert d.name == "mnist" and d.split == split and d.is_8bit
        assert d.x.shape[1:] == (1, 28, 28) and d.event_shape == (1, 28, 28)
        assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert torch.bincount(mnist["train+valid"].y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist["test"].y).tolist() == MNIST_TEST_COUNTS
    assert mnist["train"].y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist["test"].y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist_valid_is_the_last_10k_of_the_training_set(mnist: dict) -> None:
    full = mnist["train+valid"]
    assert torch.equal(full.x[:50_000], mnist["train"].x)
    assert torch.equal(full.x[50_000:], mnist["valid"].x)
    assert torch.equal(full.y[50_000:], mnist["valid"].y)


def test_mnist_values_are_exactly_k_over_255(mnist: dict) -> None:
    assert_8bit_images(mnist["train+valid"].x)
    assert_8bit_images(mnist["test"].x)
    assert abs(mnist["test"].x.mean().item() - 0.1325) < 1e-3  # the well-known MNIST mean


def test_mnist_loads_fast() -> None:
    skip_unless("mnist")
    load_dataset("mnist", "test")  # the decoded cache exists after the first load
    start = time.perf_counter()
    load_dataset("mnist", "train+valid")
    assert time.perf_counter() - start < 2.0


def test_mnist_pickle_matches_the_canonical_idx_digests(mnist: dict, tmp_path: Path) -> None:
    """IDX files rebuilt from the loaded tensors pass the IDX payload digests, and loading
    them through data_dir gives the same splits: both MNIST sources agree."""
    full, test = mnist["train+valid"], mnist["test"]
    for stem, a in (("train-images-idx3-ubyte", full.x[:, 0]), ("train-labels-idx1-ubyte", full.y),
                    ("t10k-images-idx3-ubyte", test.x[:, 0]), ("t10k-labels-idx1-ubyte", test.y)):
        a = a.numpy()
        u8 = np.rint(a * 255).astype(np.uint8) if a.dtype == np.float32 else a.astype(np.uint8)
        (tmp_path / stem).write_bytes(encode_idx(u8))
    for split in ("valid", "test"):
        from_idx = load_dataset("mnist", split, data_dir=tmp_path)
        assert "IDX files, data_dir" in from_idx.source
        assert torch.equal(from_idx.x, mnist[split].x) and torch.equal(from_idx.y, mnist[split].y)


# ---- Fashion-MNIST -------------------------------------------------------------------------

def test_fashion_splits_shapes_and_labels(fashion: dict) -> None:
    sizes = {split: len(d) for split, d in fashion.items()}
    assert sizes == {"train": 50_000, "valid": 10_000, "train+valid": 60_000, "test": 10_000}
    for split, d in fashion.items():
        assert d.name == "fashion-mnist" and d.split == split and d.is_8bit
        assert d.x.shape[1:] == (1, 28, 28) and d.y.dtype == torch.int64
    assert torch.bincount(fashion["train+valid"].y).tolist() == [6000] * 10
    assert torch.bincount(fashion["test"].y).tolist() == [1000] * 10
    assert_8bit_images(fashion["train+valid"].x)
    assert fashion["train+valid"].y[:5].tolist() == [9, 0, 0, 3, 0]


def test_fashion_valid_is_a_seeded_disjoint_draw(fashion: dict) -> None:
    idx = valid_indices(FASHION_MNIST, 60_000, valid_seed=0)
    assert len(np.unique(idx)) == 10_000 and np.all(np.diff(idx) > 0)
    assert idx.min() < 100 and idx.max() > 59_900  # spread over the whole training set
    is_valid = np.zeros(60_000, dtype=bool)
    is_valid[idx] = True
    full = fashion["train+valid"]
    assert torch.equal(fashion["valid"].x, full.x[torch.from_numpy(is_valid)])
    assert torch.equal(fashion["train"].x, full.x[torch.from_numpy(~is_valid)])
    assert torch.equal(fashion["train"].y, full.y[torch.from_numpy(~is_valid)])
    counts = torch.bincount(fashion["valid"].y)  # about 1000 a class, by chance
    assert torch.all((counts - 1000).abs() < 5 * 30)
    other = load_dataset("fashion-mnist", "valid", valid_seed=1)
    assert len(other) == 10_000 and not torch.equal(other.y, fashion["valid"].y)
    assert not np.array_equal(valid_indices(FASHION_MNIST, 60_000, 1), idx)


def test_fashion_source_is_reported(fashion: dict) -> None:
    status = {s.name: s for s in dataset_status()}["fashion-mnist"]
    assert status.available and str(status.where) in fashion["test"].source
