"""data.storage: 8-bit training data stay uint8 (no float32 copy of the training split, in
memory or memory-mapped) and train as float32 storage does; a memory-mapped set's peak
memory grows far less than its float32 copy would take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab.data.dataset as dataset_module
from tiny import TINY_OVERRIDES
from vaelab.api import fit
from vaelab.config import load_config
from vaelab.training.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def uint8_npz(path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = (rng.random((92, 1, 8, 8)) * 255).astype(np.uint8)
    np.savez(path, x_train=x[:68], x_valid=x[68:80], x_test=x[80:])  # 68 / 12 / 12 rows
    return path


@pytest.mark.parametrize("storage", ["auto", "float32"])
def test_the_training_split_is_never_converted_whole(tmp_path, monkeypatch, storage):
    converted: list[int] = []
    real = dataset_module.to_unit

    def spy(values: torch.Tensor) -> torch.Tensor:
        converted.append(values.shape[0])
        return real(values)

    monkeypatch.setattr(dataset_module, "to_unit", spy)  # what ArrayDataset.x calls
    config = load_config(None, [f"data.name='{uint8_npz(tmp_path / 'd.npz')}'",
                                *TINY_OVERRIDES, f"data.storage={storage}"])
    run = fit(config, out=tmp_path / "run", pictures=False)
    meta = json.loads((run.path / "meta.json").read_text())
    if storage == "auto":
        assert 68 not in converted and meta["train_storage"] == "uint8 in memory"
    else:  # the old storage: one float32 copy of the 68 training rows (this test can fail)
        assert 68 in converted and meta["train_storage"] == "float32 in memory"


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_uint8_storage_trains_as_float32_storage(tmp_path, binarize):
    data = uint8_npz(tmp_path / "d.npz")
    runs = {}
    for storage in ("auto", "float32"):
        config = load_config(None, [f"data.name='{data}'", *TINY_OVERRIDES, "train.epochs=2",
                                    f"data.storage={storage}", f"data.binarize={binarize}"])
        runs[storage] = fit(config, out=tmp_path / storage, pictures=False)
    a, b = (load_checkpoint(runs[s].path / "checkpoints/last.pt")["model"]
            for s in ("auto", "float32"))
    for key, value in a.items():  # the same batches; the data mean from exact uint8 sums
        torch.testing.assert_close(b[key], value, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_memory_mapped_training_does_not_hold_a_float32_copy():
    """benchmarks/memmap.py at 50k images: the big fit's peak RSS grows by much less than
    the 150 MB a float32 copy would take (the 37 MB file may be mapped in whole)."""
    command = [sys.executable, str(ROOT / "benchmarks" / "memmap.py"), "--rows", "50000",
               "--shard-rows", "10000", "--batch-size", "512", "--threads", "1",
               "--warmup-rows", "10000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["train_storage"] == "uint8 memory-mapped, 5 files"
    assert result["steps"] == 97  # 49,500 training rows in batches of 512
    assert result["peak_rss_growth_mb"] < 0.75 * result["float32_copy_mb"], result


def test_storage_may_change_on_resume_and_the_run_continues_bit_exactly(tmp_path):
    data = uint8_npz(tmp_path / "d.npz")
    sets = [f"data.name='{data}'", *TINY_OVERRIDES]
    whole = fit(load_config(None, [*sets, "train.epochs=2"]), out=tmp_path / "whole",
                pictures=False)
    part = fit(load_config(None, sets), out=tmp_path / "part", pictures=False)
    fit(None, resume=part.path, changes=["train.epochs=2", "data.storage=float32"],
        pictures=False)
    a = load_checkpoint(whole.path / "checkpoints/last.pt")["model"]
    b = load_checkpoint(part.path / "checkpoints/last.pt")["model"]
    for key, value in a.items():
        assert torch.equal(b[key], value), key
