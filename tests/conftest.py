"""Shared test setup: fast, deterministic, offline."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (linear_gaussian, ...)
os.environ.setdefault("VAELAB_NO_DOWNLOAD", "1")
# train.matmul=auto picks a GEMM library by timing; tests (and the processes they start)
# multiply on oneDNN so that runs compare bit for bit; tests/training/test_matmul.py
# clears this to test the timing itself
os.environ.setdefault("VAELAB_MATMUL", "onednn")
# one thread per test process: tests are small, and oversubscribed OpenMP threads (several
# processes x 2 threads on 2 cores) slow everything down many times over
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """A tiny binary 8x8 dataset (four prototypes plus 5% flipped pixels) as an .npz with
    train, valid and test splits: for end-to-end runs of discrete-latent models."""
    rng = np.random.default_rng(0)
    protos = rng.random((4, 1, 8, 8)) < 0.5

    def draw(n):
        x = protos[rng.integers(0, 4, n)] ^ (rng.random((n, 1, 8, 8)) < 0.05)
        return x.astype(np.float32)

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=draw(200), x_valid=draw(50), x_test=draw(50))
    return str(path)
