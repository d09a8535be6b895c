"""User files (.npz and IDX by path), their validation, and the ArrayDataset type."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig
from vaelab.data import ArrayDataset, DataError, check_unit_interval, load_dataset
from vaelab.data.idx import read_idx, write_idx
from vaelab.data.splits import split_rows


def save(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


# ---- npz -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "event_shape"), [
    ((7, 5), (5,)),  # tabular vectors
    ((7, 4, 3), (1, 4, 3)),  # grey images get a channel axis
    ((7, 3, 4, 2), (3, 4, 2)),  # channels first
])
def test_npz_shapes(tmp_path: Path, shape: tuple[int, ...], event_shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).normal(size=shape)
    data = load_dataset(save(tmp_path, x=x), "all")
    assert data.event_shape == event_shape and len(data) == 7
    assert data.x.dtype == torch.float32 and data.y is None and not data.is_8bit
    np.testing.assert_array_equal(data.x.reshape(shape).numpy(), x.astype(np.float32))
    assert data.name == data.source == str(tmp_path / "data.npz") and data.split == "all"


def test_npz_uint8_is_scaled_and_flagged_8bit_and_labels_become_int64(tmp_path: Path) -> None:
    x = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    y = np.array([3, 1, 4, 1], dtype=np.int32)
    data = load_dataset(save(tmp_path, x=x, y=y), "all")
    assert data.is_8bit and data.x.shape == (4, 1, 8, 8)
    assert torch.equal(data.x.flatten(), torch.arange(256, dtype=torch.float32) / 255)
    assert data.y.dtype == torch.int64 and data.y.tolist() == [3, 1, 4, 1]


def test_npz_floats_are_kept_as_is_and_never_8bit(tmp_path: Path) -> None:
    x = np.array([[0.0, 1.0], [2.5, -3.0]], dtype=np.float64)
    data = load_dataset(save(tmp_path, x=x), "all")
    assert data.x.tolist() == x.tolist() and not data.is_8bit


@pytest.mark.parametrize(("x", "match"), [
    (np.zeros(5), r"shape \(5,\); need \(N, D\) vectors, \(N, H, W\) or \(N, C, H, W\)"),
    (np.zeros((2, 1, 3, 3, 3)), r"shape \(2, 1, 3, 3, 3\); need"),
    (np.zeros((0, 4)), r"holds no data"),
    (np.array([["a", "b"], ["c", "d"]]), r"dtype <U1, not numbers"),
    (np.array([[b"a"]]), r"dtype \|S1, not numbers"),
    (np.zeros((2, 2), dtype=np.complex64), r"dtype complex64, not numbers"),
    (np.array([[0.5, np.nan], [np.inf, -np.inf]]), r"1 NaN and 2 infinite values"),
    (np.array([[1e39, 0.0]]), r"0 NaN and 1 infinite values \(after conversion to float32\)"),
])
def test_npz_bad_x_is_a_clear_error(tmp_path: Path, x: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(save(tmp_path, x=x), "all")


def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    x = np.empty((2, 2), dtype=object)
    x[:] = 1
    with pytest.raises(DataError, match=r"cannot be read without pickle.*not dtype object"):
        load_dataset(save(tmp_path, x=x), "all")


@pytest.mark.parametrize(("y", "match"), [
    (np.zeros(3, dtype=np.int64), r"y has shape \(3,\) but x has 4 rows; save one label per row"),
    (np.zeros((4, 1), dtype=np.int64), r"y has shape \(4, 1\) but x has 4 rows"),
    (np.zeros(4, dtype=np.float32), r"y has dtype float32; labels must be integers"),
])
def test_npz_bad_y_is_a_clear_error(tmp_path: Path, y: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(save(tmp_path, x=np.zeros((4, 2)), y=y), "all")


def test_npz_missing_x_missing_file_and_not_an_npz(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no array 'x' \(arrays: data\); save the data as x"):
        load_dataset(save(tmp_path, data=np.zeros((2, 2))), "all")
    with pytest.raises(DataError, match=r"nope\.npz: no such file; check the path"):
        load_dataset(str(tmp_path / "nope.npz"), "all")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        load_dataset(str(tmp_path / "junk.npz"), "all")
    np.save(tmp_path / "single.npy", np.zeros((2, 2)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match=r"a single \.npy array, not an \.npz archive"):
        load_dataset(str(tmp_path / "single.npz"), "all")


def test_npz_named_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {f"x_{s}": rng.random((n, 3)) for s, n in (("train", 5), ("valid", 2), ("test", 3))}
    arrays |= {f"y_{s}": np.arange(len(arrays[f"x_{s}"])) for s in ("train", "valid", "test")}
    path = save(tmp_path, **arrays)
    for split, n in (("train", 5), ("valid", 2), ("test", 3), ("train+valid", 7)):
        data = load_dataset(path, split)
        assert len(data) == n and data.split == split and data.y is not None
    both = load_dataset(path, "train+valid")
    expected = np.concatenate([arrays["x_train"], arrays["x_valid"]]).astype(np.float32)
    np.testing.assert_array_equal(both.x.numpy(), expected)
    with pytest.raises(DataError, match=r"no array 'x' .*arrays: x_train"):
        load_dataset(path, "all")
    only_train = save(tmp_path, x=np.zeros((2, 2)), x_train=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"no array 'x_valid' for split 'valid'"):
        load_dataset(only_train, "valid")
    with pytest.raises(DataError, match=r"unknown split 'val'"):
        load_dataset(only_train, "val")


def test_npz_train_valid_label_mismatch(tmp_path: Path) -> None:
    path = save(tmp_path, x_train=np.zeros((2, 2)), y_train=np.zeros(2, dtype=int),
                x_valid=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"only one of y_train, y_valid is present"):
        load_dataset(path, "train+valid")


# ---- a single array: the seeded split -------------------------------------------------------

def single_npz(tmp_path: Path, n: int = 200) -> tuple[str, np.ndarray, np.ndarray]:
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)  # row i holds 3i, 3i+1, 3i+2
    y = np.arange(n) % 7
    return save(tmp_path, x=x, y=y), x, y


def test_single_array_npz_is_cut_by_the_seeded_split(tmp_path: Path) -> None:
    path, x, y = single_npz(tmp_path)
    options = DataConfig(split_fractions=[0.7, 0.2, 0.1], split_seed=4)
    parts = {s: load_dataset(path, s, options=options) for s in ("train", "valid", "test")}
    assert [len(d) for d in parts.values()] == [140, 40, 20]
    for split, data in parts.items():
        rows = split_rows(200, split, [0.7, 0.2, 0.1], 4)
        np.testing.assert_array_equal(data.x.numpy(), x[rows].astype(np.float32))
        assert data.y.tolist() == y[rows].tolist() and data.split == split  # labels follow x
        assert data.info["split"] == {"method": "seeded", "rows": 200,
                                      "fractions": [0.7, 0.2, 0.1], "seed": 4,
                                      "sizes": {"train": 140, "valid": 40, "test": 20}}
    firsts = np.concatenate([d.x[:, 0].numpy() / 3 for d in parts.values()])
    assert sorted(firsts.astype(int).tolist()) == list(range(200))  # every row exactly once
    both = load_dataset(path, "train+valid", options=options)
    assert len(both) == 180
    assert len(load_dataset(path, "all", options=options)) == 200


def test_seeded_split_follows_the_seed_and_the_default_config(tmp_path: Path) -> None:
    path, _, _ = single_npz(tmp_path)
    default = load_dataset(path, "test")  # DataConfig's defaults: [0.8, 0.1, 0.1], seed 0
    assert len(default) == 20
    assert torch.equal(default.x, load_dataset(path, "test", options=DataConfig()).x)
    other = load_dataset(path, "test", options=DataConfig(split_seed=1))
    assert not torch.equal(default.x, other.x)


def test_seeded_split_too_few_rows_names_the_split(tmp_path: Path) -> None:
    path = save(tmp_path, x=np.zeros((5, 2)))
    with pytest.raises(DataError, match=r"5 rows give the valid split .* no row"):
        load_dataset(path, "train")
    assert len(load_dataset(path, "all")) == 5  # every row still loads


def test_single_array_labels_of_the_wrong_length_fail_before_the_split(tmp_path: Path) -> None:
    path = save(tmp_path, x=np.zeros((20, 2)), y=np.zeros(19, dtype=int))
    with pytest.raises(DataError, match=r"y has shape \(19,\) but x has 20 rows"):
        load_dataset(path, "train")


def test_idx_file_is_cut_by_the_seeded_split(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(50, dtype=np.uint8))
    parts = [load_dataset(str(path), s) for s in ("train", "valid", "test")]
    assert [len(d) for d in parts] == [40, 5, 5] and all(d.is_8bit for d in parts)
    assert sorted(torch.cat([d.y for d in parts]).tolist()) == list(range(50))
    rows = split_rows(50, "valid", [0.8, 0.1, 0.1], 0)
    assert parts[1].y.tolist() == rows.tolist()


# ---- IDX -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    a = (np.random.default_rng(0).normal(size=(6, 5, 4)) * 50).astype(dtype)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(a, b)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_uses_the_canonical_big_endian_header(tmp_path: Path) -> None:
    write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 4), dtype=np.uint8))
    head = (tmp_path / "x-idx3-ubyte").read_bytes()[:16]
    assert head == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])


@pytest.mark.parametrize("gz", [False, True])
def test_idx_path_loads_with_sibling_labels(tmp_path: Path, gz: bool) -> None:
    ext = ".gz" if gz else ""
    x = np.random.default_rng(0).integers(0, 256, (9, 7, 5), dtype=np.uint8)
    y = np.arange(9, dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", x)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y)
    data = load_dataset(str(tmp_path / f"train-images-idx3-ubyte{ext}"), "all")
    assert data.x.shape == (9, 1, 7, 5) and data.is_8bit and data.split == "all"
    assert torch.equal(data.x[:, 0], torch.from_numpy(x).float() / 255)
    assert data.y.tolist() == list(range(9))


def test_idx_without_labels_and_tabular_idx2(tmp_path: Path) -> None:
    write_idx(tmp_path / "feat-idx2-ubyte", np.ones((4, 6), dtype=np.float32) / 3)
    data = load_dataset(str(tmp_path / "feat-idx2-ubyte"), "all")
    assert data.event_shape == (6,) and data.y is None and not data.is_8bit


def test_idx_errors(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    with pytest.raises(DataError, match=r"no such file; check the path"):
        load_dataset(str(path), "all")
    path.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match=r"not an IDX file"):
        load_dataset(str(path), "all")
    write_idx(path, np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"unknown split 'training'"):
        load_dataset(str(path), "training")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"holds 59 bytes but its IDX header \(3, 4, 4\) needs 64"):
        load_dataset(str(path), "all")
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    body = gzip.compress(np.random.default_rng(0).bytes(5000))
    gz.write_bytes(body[: len(body) // 2])
    with pytest.raises(DataError, match=r"truncated or damaged gzip file"):
        load_dataset(str(gz), "all")
    write_idx(path, np.zeros((3, 4, 4), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"an IDX labels file must be 1-D"):
        load_dataset(str(path), "all")
    with pytest.raises(DataError, match=r"IDX cannot store dtype int64"):
        write_idx(tmp_path / "z-idx1-ubyte", np.zeros(3, dtype=np.int64))


# ---- range check and the dataset type ------------------------------------------------------

def test_check_unit_interval_names_the_range_and_the_fix() -> None:
    check_unit_interval(torch.tensor([0.0, 0.5, 1.0]), "ok")
    check_unit_interval(torch.empty(0), "empty")
    with pytest.raises(DataError, match=r"mydata has values in \[-0\.5, 2\], outside \[0, 1\]: "
                                        r"use a Gaussian likelihood, or rescale"):
        check_unit_interval(torch.tensor([-0.5, 2.0]), "mydata")
    with pytest.raises(DataError, match=r"nan"):
        check_unit_interval(torch.tensor([0.5, float("nan")]), "x")


def test_array_dataset_checks_its_fields() -> None:
    data = ArrayDataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), "n", "all", "s",
                        False)
    assert len(data) == 3 and data.event_shape == (2,) and "n=3" in repr(data)
    with pytest.raises(DataError, match=r"must be float32"):
        ArrayDataset(torch.zeros(3, 2, dtype=torch.float64), None, "n", "all", "s", False)
    with pytest.raises(DataError, match=r"must be int64"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), "n", "all", "s", False)
    with pytest.raises(DataError, match=r"unknown split"):
        ArrayDataset(torch.zeros(3, 2), None, "n", "dev", "s", False)


# ---- one command: `vaelab train --set data.name=file.npz` -----------------------------------

def test_single_array_npz_trains_with_one_command_and_records_its_split(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tiny import TINY_OVERRIDES
    from vaelab.cli import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.random((120, 1, 6, 6)).astype(np.float32),
             y=rng.integers(0, 3, 120))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--out", "run", "--set", "data.name='mine.npz'", "--set",
            "data.split_seed=3", *(a for o in TINY_OVERRIDES for a in ("--set", o))]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = ("data: mine.npz: seeded split of 120 rows (data.split_fractions=[0.8, 0.1, 0.1], "
            "data.split_seed=3): train 96, valid 12, test 12")
    assert line in out.splitlines()
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["data"]["split"]["sizes"] == {"train": 96, "valid": 12, "test": 12}
    assert meta["data"]["split"]["seed"] == 3 and meta["train_size"] == 96
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["line"] == line and summary["test"]["n"] == 12
