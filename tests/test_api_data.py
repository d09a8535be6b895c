"""Own data from Python: ``fit(config, data=...)`` with an array (split by seed), named splits
with labels, or a torch Dataset; the run stays usable (eval, pictures, report, explorer,
load_run, resume) from its folder's copy, or with the data passed again; bad data fail in
one line naming the problem, before anything is written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vaelab
from tiny import TINY_OVERRIDES
from vaelab.config import ConfigError, load_config
from vaelab.data import DataError, fixed_binarization
from vaelab.data.splits import split_rows
from vaelab.training.runs import RunDir, RunError
from vaelab.viz.explorer import Explorer, LoadedModel
from vaelab.viz.figures import render
from vaelab.viz.report import write_report


def images(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 8, 8) images of four prototypes, and their labels."""
    rng = np.random.default_rng(seed)
    protos = rng.random((4, 8, 8))
    y = rng.integers(0, 4, size=n)
    x = np.clip(protos[y] + 0.1 * rng.standard_normal((n, 8, 8)), 0, 1)
    return (x * 255).astype(np.uint8), y


def config(*extra: str):
    return load_config(None, [*TINY_OVERRIDES, *extra])


def unit(x: np.ndarray) -> torch.Tensor:
    xf = x.astype(np.float32)
    xf /= 255
    return torch.from_numpy(xf)[:, None]


@pytest.fixture(scope="module")
def array_run(tmp_path_factory):
    x, y = images()
    root = tmp_path_factory.mktemp("arr")
    return vaelab.fit(config("train.epochs=2"), out=root / "run", data=(x, y)), x, y


def test_one_array_is_split_by_seed_and_kept_in_the_run_folder(array_run):
    run, x, y = array_run
    path = run.path
    assert RunDir(path).read_config().data.name == "python"
    meta = json.loads((path / "meta.json").read_text())
    assert meta["data_copy"] == "data/x.npy" and meta["train_size"] == 96
    assert "uint8 (120, 1, 8, 8)" in meta["dataset"] and meta["train_storage"] == "uint8 in memory"
    saved = np.load(path / "data" / "x.npy")
    assert saved.dtype == np.uint8 and np.array_equal(saved[:, 0], x)
    assert np.array_equal(np.load(path / "data" / "x.labels.npy"), y)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["test"]["n"] == 12  # 10% of 120
    loaded = vaelab.load_run(path)  # from the copy alone
    rows = split_rows(120, "test", [0.8, 0.1, 0.1], 0)
    assert torch.equal(loaded.data("test"), fixed_binarization(unit(x[rows]), 0))
    assert torch.equal(loaded.dataset("test").y, torch.from_numpy(y[rows]))
    # eval, pictures, report and the explorer (API level), as for a built-in dataset
    assert loaded.evaluate("test", iw_samples=4)["n"] == 12
    drawn = [f.path for f in render(loaded, ("samples", "reconstructions", "scatter"))]
    assert all(p is not None and p.is_file() for p in drawn)
    assert write_report(path).stat().st_size > 1000
    assert Explorer([LoadedModel("arr", loaded, points=10)]) is not None


def test_array_run_resumes_from_its_copy(array_run, tmp_path):
    run = array_run[0]
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    resumed = vaelab.fit(None, resume=copy, changes=["train.epochs=3"], pictures=False)
    assert json.loads((copy / "summary.json").read_text())["epochs"] == 3
    assert resumed.config.data.name == str(copy / "data" / "x.npy")  # in memory only
    assert RunDir(copy).read_config().data.name == "python"


def test_named_splits_and_tensors_train_like_the_same_npz(tmp_path):
    x, y = images()
    parts = {"train": (torch.from_numpy(x[:80]), torch.from_numpy(y[:80])),
             "valid": x[80:100], "test": (x[100:], y[100:])}
    run = vaelab.fit(config(), out=tmp_path / "dict", data=parts, pictures=False)
    np.savez(tmp_path / "same.npz", x_train=x[:80], y_train=y[:80], x_valid=x[80:100],
             x_test=x[100:], y_test=y[100:])
    ref = vaelab.fit(config(f"data.name='{tmp_path / 'same.npz'}'"), out=tmp_path / "npz",
                     pictures=False)
    for key, value in torch.load(ref.path / "checkpoints/last.pt")["model"].items():
        assert torch.equal(torch.load(run.path / "checkpoints/last.pt")["model"][key], value)
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["data_copy"] == "data" and meta["data_splits"] == ["train", "valid", "test",
                                                                   "train+valid"]
    loaded = vaelab.load_run(run.path)
    assert torch.equal(loaded.dataset("test").y, torch.from_numpy(y[100:]))
    assert loaded.dataset("valid").y is None


class Images(torch.utils.data.Dataset):
    """A map-style Dataset of (x, y), as a user would write one for data on disk."""

    def __init__(self, x: np.ndarray, y: np.ndarray, bad: dict[int, object] | None = None):
        self.x, self.y, self.bad = x, y, bad or {}
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        if i in self.bad:
            return self.bad[i], int(self.y[i])
        return torch.from_numpy(self.x[i]), int(self.y[i])


def test_a_dataset_trains_like_the_array_it_holds(tmp_path):
    x, y = images()
    ds = Images(x, y)
    run = vaelab.fit(config(), out=tmp_path / "ds", data=ds, pictures=False)
    ref = vaelab.fit(config(), out=tmp_path / "arr", data=(x, y), pictures=False)
    a = torch.load(run.path / "checkpoints/last.pt")["model"]
    b = torch.load(ref.path / "checkpoints/last.pt")["model"]
    for key, value in b.items():  # the same rows, batches and exact mean: the same run
        assert torch.equal(a[key], value), key
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["data_splits"] == ["valid", "test"]  # the Dataset itself is not copied
    assert sorted(p.name for p in (run.path / "data").iterdir()) == [
        "test.labels.npy", "test.npy", "valid.labels.npy", "valid.npy"]
    loaded = vaelab.load_run(run.path)
    assert loaded.evaluate("test", iw_samples=2)["n"] == 12
    with pytest.raises(RunError, match=r"keeps only the valid, test split\(s\) .*"
                                       r"load_run\(path, data=\.\.\.\)"):
        loaded.data("train")
    again = vaelab.load_run(run.path, data=ds)
    assert again.dataset("train").values.shape == (96, 1, 8, 8)
    with pytest.raises(RunError, match=r"does not keep .*fit\(resume=RUN, data=\.\.\.\)"):
        vaelab.fit(None, resume=run.path, changes=["train.epochs=2"])
    vaelab.fit(None, resume=run.path, changes=["train.epochs=2"], data=ds, pictures=False)
    assert json.loads((run.path / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(("data", "error", "match"), [
    (lambda: Images(*images(), bad={3: torch.zeros(4, 4, dtype=torch.uint8)}), DataError,
     r"data item 3 has shape \(4, 4\), but item 0 has \(8, 8\)"),
    (lambda: Images(*images(), bad={5: "text"}), DataError,
     r"data item 5 is a str, not a tensor or numpy array of numbers"),
    (lambda: Images(*images(), bad={0: {"x": 1}}), DataError, r"data item 0 is a dict"),
    (lambda: "images.npy", DataError, r"data is a str; pass a numpy array"),
    (lambda: {"training": images()[0]}, DataError, r"data= has keys \['training'\]"),
    (lambda: np.array([["a", "b"]] * 4), DataError, r"data: x has dtype <U1, not numbers"),
    (lambda: (images()[0], np.zeros(5, dtype=np.int64)), DataError,
     r"y has shape \(5,\) but x has 120 rows"),
    (lambda: {"train": images()[0]}, DataError, r"data= has no 'valid' split \(keys: train\)"),
    (lambda: images()[0] * 300.0, DataError,
     r"python \(train\) has values in \[.*\], outside \[0, 1\]"),
])
def test_bad_data_fail_in_one_line_before_anything_is_written(tmp_path, data, error, match):
    with pytest.raises(error, match=match):
        vaelab.fit(config(), out=tmp_path / "run", data=data())
    assert not (tmp_path / "run").exists()


def test_a_conditional_model_on_a_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model.conditional=true needs the labels in memory"):
        vaelab.fit(config("model.conditional=true"), out=tmp_path / "run",
                   data=Images(*images()))
    assert not (tmp_path / "run").exists()


def test_a_conditional_model_trains_on_labelled_arrays(tmp_path):
    x, y = images()
    run = vaelab.fit(config("model.conditional=true"), out=tmp_path / "run", data=(x, y),
                     pictures=False)
    assert run.config.model.label_classes == 4
    assert run.data("test").shape == (12, 64 + 4)  # flattened x, then the one-hot label


def test_data_name_python_without_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data.name=python stands for data passed to"):
        vaelab.fit(config("data.name=python"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
