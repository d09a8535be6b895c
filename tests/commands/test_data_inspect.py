"""``vaelab data inspect PATH`` (commands/data.py, data/inspection.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab import config as cfgmod
from vaelab.cli import main
from vaelab.data import catalog
from vaelab.data.idx import encode_idx, write_idx
from vaelab.data.inspection import likelihood_fit

ALL_YES = ("likelihoods: bernoulli yes; gaussian yes; continuous-bernoulli yes; "
           "logistic-256 yes")


def inspect(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["data", "inspect", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.strip()


def test_single_array_npz_of_uint8(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (100, 5, 4), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(100) % 2)
    code, out, _ = inspect(capsys, str(tmp_path / "d.npz"))
    assert code == 0
    assert out[0] == f"{tmp_path / 'd.npz'}: .npz file"
    assert "rows: all 100, train 80, valid 10, test 10" in out
    assert "shape of one row: (1, 5, 4); stored as uint8 (8-bit, scaled to k/255)" in out
    assert "values: [0, 1] (k/255)" in out and "labels: 2 values: 0: 50, 1: 50" in out
    assert "split: seeded (data.split_fractions=[0.8, 0.1, 0.1], data.split_seed=0)" in out
    assert ALL_YES in out


def test_float_npz_outside_the_unit_interval_and_its_own_splits(tmp_path, capsys):
    np.savez(tmp_path / "f.npz", x_train=np.full((6, 3), -2.5), x_valid=np.ones((2, 3)),
             x_test=np.full((3, 3), 4.0))
    code, out, _ = inspect(capsys, str(tmp_path / "f.npz"), "--json")
    facts = json.loads("\n".join(out))
    assert code == 0 and facts["rows"] == {"train": 6, "valid": 2, "test": 3}
    assert facts["value_range"] == [-2.5, 4.0] and not facts["is_8bit"]
    assert facts["stored_as"] == "float64" and facts["labels"] is None
    assert facts["likelihoods"]["gaussian"] == "yes"
    assert facts["likelihoods"]["bernoulli"].startswith("no (values outside [0, 1]")
    assert facts["likelihoods"]["logistic-256"].startswith("no (needs 8-bit data")


def test_idx_file_with_its_labels(tmp_path, capsys):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((30, 3, 3), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([7] * 10 + [3] * 20, np.uint8))
    code, out, _ = inspect(capsys, str(tmp_path / "train-images-idx3-ubyte"))
    assert code == 0 and out[0].endswith(": IDX file")
    assert "labels: 2 values: 3: 20, 7: 10" in out
    assert "rows: all 30, train 24, valid 3, test 3" in out


def image_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for i, (w, h) in enumerate(sizes):
        path = root / ("cats" if i % 2 else "dogs") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 100 + i, dtype=np.uint8)).save(path)
    return root


def test_image_folder_classes_sizes_and_a_problem_after_the_facts(tmp_path, capsys):
    root = image_folder(tmp_path / "pets", [(8, 8), (8, 8), (10, 6), (8, 8)] * 5)
    code, out, err = inspect(capsys, str(root))
    assert code == 2 and "files: 20; sizes (width x height): 8x8: 15, 10x6: 5" in out
    assert "colour modes: RGB: 20" in out
    assert err.startswith("vaelab data: error:") and "images differ in size" in err
    assert "\n" not in err
    code, out, _ = inspect(capsys, str(root), "--set", "data.image_size=4")
    assert code == 0
    assert "shape of one row: (3, 4, 4); stored as uint8 (8-bit, scaled to k/255)" in out
    assert "labels: 2 values: cats=0: 10, dogs=1: 10" in out and ALL_YES in out


def test_table_in_its_own_units_and_only_gaussian(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("a,b,kind\n" + "".join(f"{1000 + i},{i / 100},{'xy'[i % 2]}\n"
                                           for i in range(40)))
    code, out, _ = inspect(capsys, str(path), "--set", "data.label_column='kind'")
    assert code == 0 and out[0].endswith(": table")
    assert "shape of one row: (2,); stored as float64" in out
    assert "values: [0, 1039]" in out and "labels: 2 values: x=0: 20, y=1: 20" in out
    assert "  column 'a': mean 1019.5, std 11.5434, min 1000, max 1039" in out
    assert "trains standardised per column by the training split's mean and std" in out
    assert ("likelihoods: bernoulli no (a table takes model.likelihood=gaussian); gaussian yes; "
            "continuous-bernoulli no (a table takes model.likelihood=gaussian); logistic-256 no "
            "(a table takes model.likelihood=gaussian)") in out


def test_built_in_name_by_split(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (30, 4, 4), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 30, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 4, 4), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 8, dtype=np.uint8)}
    files = []
    (tmp_path / "fake-digits").mkdir()
    for stem, a in arrays.items():
        payload = encode_idx(a)
        gz = gzip.compress(payload, mtime=0)
        files.append(catalog.IdxFile(stem, payload_sha256=hashlib.sha256(payload).hexdigest(),
                                     gz_sha256=hashlib.sha256(gz).hexdigest(),
                                     gz_md5=hashlib.md5(gz).hexdigest()))
        (tmp_path / "fake-digits" / stem).write_bytes(payload)
    spec = catalog.DatasetSpec("fake-digits", *files, mirrors=(), n_valid=5)
    monkeypatch.setitem(catalog.DATASETS, spec.name, spec)
    code, out, _ = inspect(capsys, "fake-digits", "--set", f"data.data_dir='{tmp_path}'")
    assert code == 0 and out[0] == "fake-digits: built-in"
    assert "rows: train 25, valid 5, test 8" in out and ALL_YES in out


def test_unknown_name_is_one_line(capsys, tmp_path):
    code, out, err = inspect(capsys, str(tmp_path / "nothing.bin"))
    assert code == 2 and out == [] and "unknown dataset" in err and "\n" not in err


def test_every_likelihood_has_a_rule():
    names = typing.get_args(cfgmod.LikelihoodName)
    fits = likelihood_fit(0.0, 1.0, True, table=False)
    assert set(fits) == set(names) and set(fits.values()) == {"yes"}
    assert likelihood_fit(-1.0, 1.0, False, table=False)["bernoulli"] != "yes"


@pytest.mark.parametrize("bad", ["data.image_size=-1", "data.image_fit='crop'"])
def test_data_options_are_checked(bad, tmp_path, capsys):
    code, _, err = inspect(capsys, str(tmp_path), "--set", bad)
    assert code == 2 and "must be" in err
