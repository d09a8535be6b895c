"""CIFAR-10 python-batch files: layout, splits, safe unpickling, MD5 verification, a
verified download (fake opener), and a conv VAE with the 8-bit likelihood reporting
bits/dim. Every file here is a miniature the tests write in the real format."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.api import fit
from vaelab.config import load_config
from vaelab.data import DataError, cifar, dataset_status, fetch_dataset, load_dataset

N_PER_BATCH = 20  # 5 train batches -> 100 images: train 90, valid 10; test 20


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def batch_bytes(seed: int, n: int = N_PER_BATCH) -> tuple[bytes, np.ndarray, list[int]]:
    """A batch as the dataset ships it: a protocol-2 pickle of a dict with bytes keys."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    batch = {b"batch_label": f"batch {seed}".encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}
    return pickle.dumps(batch, protocol=2), data, labels


def write_batches(directory: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, name in enumerate([*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]):
        raw, data, labels = batch_bytes(seed)
        (directory / name).write_bytes(raw)
        out[name] = (data, labels)
    return out


@pytest.fixture
def mini(tmp_path: Path) -> tuple[Path, dict]:
    directory = tmp_path / "cifar-10-batches-py"
    return directory, write_batches(directory)


def test_directory_loads_channels_first_in_unit_steps(mini):
    directory, arrays = mini
    test = load_dataset(str(directory), "test")
    data, labels = arrays["test_batch"]
    assert test.event_shape == (3, 32, 32) and test.is_8bit and len(test) == N_PER_BATCH
    # a row is the R plane, then G, then B, each 32x32 row-major
    for c in range(3):
        expect = data[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32) / 255
        assert torch.equal(test.x[:, c], torch.from_numpy(expect.astype(np.float32)))
    assert test.y.tolist() == labels


def test_splits_are_the_batches_in_order_with_the_last_tenth_for_validation(mini):
    directory, arrays = mini
    every = np.concatenate([arrays[b][0] for b in cifar.TRAIN_BATCHES])
    full = load_dataset(str(directory), "train+valid")
    train, valid = (load_dataset(str(directory), s) for s in ("train", "valid"))
    assert (len(full), len(train), len(valid)) == (100, 90, 10)
    assert torch.equal(full.x, torch.cat([train.x, valid.x]))
    assert torch.equal(full.x.flatten(1) * 255, torch.from_numpy(every.astype(np.float32)))
    with pytest.raises(DataError, match="unknown split"):
        load_dataset(str(directory), "all")


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_without_running_it(mini, tmp_path):
    directory, _ = mini
    marker = tmp_path / "pwned"
    (directory / "test_batch").write_bytes(pickle.dumps({b"data": Evil(marker)}, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset(str(directory), "test")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "not a dict", "bad labels"])
def test_damaged_batches_are_clear_errors(mini, damage):
    directory, arrays = mini
    path = directory / "test_batch"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "wrong shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8),
                                       b"labels": [0] * 4}, protocol=2))
    elif damage == "not a dict":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    else:
        path.write_bytes(pickle.dumps({b"data": arrays["test_batch"][0],
                                       b"labels": [11] * N_PER_BATCH}, protocol=2))
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(directory), "test")


@pytest.fixture
def digests(mini, monkeypatch):
    """The built-in dataset's digests replaced by the miniature files' MD5s."""
    directory, _ = mini
    for name in cifar.BATCH_MD5:
        monkeypatch.setitem(cifar.BATCH_MD5, name,
                            hashlib.md5((directory / name).read_bytes()).hexdigest())
    return directory


def test_builtin_name_verifies_every_file(digests, tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "cache"))
    data_dir = digests.parent
    valid = load_dataset("cifar10", "valid", data_dir=data_dir)
    assert valid.name == "cifar10" and "verified" in valid.source and len(valid) == 10
    assert next(s for s in dataset_status(data_dir=data_dir) if s.name == "cifar10").available
    raw = bytearray((digests / "data_batch_3").read_bytes())
    raw[-10] ^= 1
    (digests / "data_batch_3").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="data_batch_3 failed its checksum"):
        load_dataset("CIFAR-10", "train", data_dir=data_dir)


def test_missing_builtin_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="vaelab data fetch cifar10"):
        load_dataset("cifar10", "train")


def tarball(directory: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {f"{cifar.FOLDER}/{p.name}": p.read_bytes() for p in directory.iterdir()}
        for name, data in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_checks_the_tarball_then_extracts_only_the_batches(digests, tmp_path,
                                                                  monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VAELAB_DATA", str(cache))
    body = tarball(digests, extra={"../escape": b"x", f"{cifar.FOLDER}/notes.txt": b"y"})
    calls = []

    def opener(url: str, timeout: float) -> FakeResponse:
        calls.append(url)
        return FakeResponse(body)

    monkeypatch.setattr(cifar, "TARBALL_MD5", "0" * 32)
    with pytest.raises(DataError, match="failed its checksum"):
        fetch_dataset("cifar10", opener=opener, progress=False)
    assert not any(p.is_file() for p in cache.rglob("*"))  # nothing unverified kept
    monkeypatch.setattr(cifar, "TARBALL_MD5", hashlib.md5(body).hexdigest())
    dest = fetch_dataset("cifar10", opener=opener, progress=False)
    assert calls == [cifar.URLS[0]] * 2
    assert sorted(p.name for p in dest.iterdir()) == sorted(cifar.BATCH_MD5)
    assert not (cache / cifar.TARBALL).exists() and not (tmp_path / "escape").exists()
    assert len(load_dataset("cifar10", "test")) == N_PER_BATCH
    fetch_dataset("cifar10", opener=opener, progress=False)  # verified copy: no download
    assert len(calls) == 2


def test_conv_vae_with_the_8bit_likelihood_reports_bits_per_dim(mini, tmp_path):
    directory, _ = mini
    threads = torch.get_num_threads()
    overrides = {"data.name": str(directory), "model.encoder": "conv", "model.decoder": "conv",
                 "model.channels": "[4, 8]", "model.hidden": "[16]", "model.latent_dim": 4,
                 "model.likelihood": "logistic-256", "train.epochs": 1,
                 "train.batch_size": 30, "train.threads": 1, "train.progress": "false",
                 "eval.iw_samples": 3, "eval.batch_size": 10}
    try:
        run = fit(load_config(overrides=[f"{k}={v}" for k, v in overrides.items()]),
                  out=tmp_path / "run", pictures=False)
    finally:
        torch.set_num_threads(threads)
    test = json.loads((run.path / "summary.json").read_text())["test"]
    d = 3 * 32 * 32
    assert test["bits_per_dim"] == pytest.approx(test["nll"] / (d * math.log(2)))
    # a discrete likelihood over 256 levels: between 0 and 8 bits for a barely trained model
    # near the data's level (uniform random bytes: about 8 bits/dim)
    assert 5.0 < test["bits_per_dim"] < 12.0


def test_the_cifar10_config_builds_a_conv_vae_for_colour_images():
    from vaelab.build import build_model

    config = load_config(Path(__file__).parents[2] / "configs" / "cifar10.toml")
    assert config.data.name == "cifar10" and config.model.likelihood == "logistic-256"
    model = build_model(config.model, (3, 32, 32))
    px = model.decode(torch.zeros(2, config.model.latent_dim))
    assert px.batch_shape == (2,) and px.event_shape == (3, 32, 32)
