"""Tables of numbers (data/tables.py, data/standardize.py): CSV/TSV/Parquet for tabular VAEs."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import tiny_config
from vaelab.config import ConfigError, DataConfig
from vaelab.data import DataError, load_dataset
from vaelab.data.splits import split_rows


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def numbers_csv(path: Path, n: int = 50, seed: int = 0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(1000, 50, n), rng.normal(-3, 0.01, n)], axis=1)
    labels = rng.integers(0, 3, n)
    rows = [f"{float(a)!r},{float(b)!r},{k}" for (a, b), k in zip(x, labels, strict=True)]
    lines = ["height,weight,kind", *rows]
    return write_csv(path, "\n".join(lines) + "\n"), np.column_stack([x, labels])


def test_csv_columns_rows_and_an_integer_label_column(tmp_path):
    path, table = numbers_csv(tmp_path / "t.csv")
    options = DataConfig(label_column="kind", standardize=False)
    data = load_dataset(str(path), "all", options=options)
    assert data.x.shape == (50, 2) and data.x.dtype == torch.float32 and not data.is_8bit
    np.testing.assert_array_equal(data.x.numpy(), table[:, :2].astype(np.float32))
    assert data.y.tolist() == table[:, 2].astype(int).tolist()
    assert data.info["columns"] == ["height", "weight"] and "classes" not in data.info
    unlabelled = load_dataset(str(path), "all", options=DataConfig(standardize=False))
    assert unlabelled.x.shape == (50, 3) and unlabelled.y is None


def test_text_labels_become_sorted_classes_and_tsv_blank_lines_are_skipped(tmp_path):
    path = write_csv(tmp_path / "t.tsv", "a\tb\tanimal\n1\t2\tdog\n\n3\t4\tcat\n5\t6\tdog\n")
    data = load_dataset(str(path), "all", options=DataConfig(label_column="animal",
                                                             standardize=False))
    assert data.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert data.y.tolist() == [1, 0, 1] and data.info["classes"] == {"cat": 0, "dog": 1}


def test_standardisation_is_fitted_on_the_training_split_only(tmp_path):
    path, table = numbers_csv(tmp_path / "t.csv", n=200)
    options = DataConfig(label_column="kind", split_seed=5)
    train = load_dataset(str(path), "train", options=options)
    test = load_dataset(str(path), "test", options=options)
    raw_train = table[split_rows(200, "train", [0.8, 0.1, 0.1], 5), :2]
    raw_test = table[split_rows(200, "test", [0.8, 0.1, 0.1], 5), :2]
    mean, std = raw_train.mean(0), raw_train.std(0)
    np.testing.assert_allclose(train.x.double().mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(train.x.double().std(0, unbiased=False).numpy(), 1, atol=1e-5)
    np.testing.assert_allclose(test.x.numpy(), (raw_test - mean) / std, rtol=1e-5, atol=1e-5)
    record = train.info["standardize"]
    np.testing.assert_allclose(record["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(record["std"], std, rtol=1e-12)
    assert record["columns"] == ["height", "weight"] and record["fitted_on"] == "train"
    assert test.info["standardize"] == record  # every split carries the training statistics


BAD_CSV = {
    "non-numeric": ("a,b\n1,2\n3,x7\n", r"column 'b' is not numeric: row 2 \(line 3\) holds "
                                        r"'x7'; encode it as numbers"),
    "missing (empty)": ("a,b\n1,2\n,4\n", r"column 'a' has a missing value in row 2 \(line 3\)"),
    "missing (NA)": ("a,b\n1,2\n3,4\n5,NA\n", r"column 'b' has a missing value in row 3"),
    "infinite": ("a,b\n1,inf\n", r"column 'b' has an infinite value in row 1"),
    "empty file": ("", r"t\.csv is empty; a table needs a header row"),
    "header only": ("a,b\n", r"t\.csv has no rows of data \(columns: a, b\)"),
    "ragged": ("a,b\n1,2\n3\n", r"line 3 has 1 fields but the header row names 2 columns"),
    "duplicate name": ("a,a\n1,2\n", r"column name 'a' appears twice"),
    "unnamed column": ("a,\n1,2\n", r"column 2 of the header row has no name"),
}


@pytest.mark.parametrize("case", list(BAD_CSV), ids=list(BAD_CSV))
def test_bad_tables_fail_in_one_line_naming_column_and_row_before_any_run_folder(case, tmp_path):
    import vaelab

    text, pattern = BAD_CSV[case]
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(str(path), "all")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataError, match=pattern):
        vaelab.fit(tiny_config(path, "model.likelihood='gaussian'"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_label_column_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv", "a,y\n1,0\n2,\n")
    with pytest.raises(DataError, match=r"label column 'y' has a missing value in row 2"):
        load_dataset(str(path), "all", options=DataConfig(label_column="y"))
    with pytest.raises(DataError, match=r"data.label_column='z' is not a column of .*"
                                        r"\(columns: a, y\)"):
        load_dataset(str(path), "all", options=DataConfig(label_column="z"))
    only = write_csv(tmp_path / "only.csv", "y\n1\n")
    with pytest.raises(DataError, match=r"no data columns besides the label column 'y'"):
        load_dataset(str(only), "all", options=DataConfig(label_column="y"))


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "logistic-256"])
def test_a_table_needs_a_gaussian_likelihood(likelihood, tmp_path):
    import vaelab

    path, _ = numbers_csv(tmp_path / "t.csv")
    config = tiny_config(path, f"model.likelihood='{likelihood}'")
    with pytest.raises(ConfigError, match=rf"model.likelihood={likelihood} does not fit a "
                                          r"table .* set model.likelihood=gaussian"):
        vaelab.fit(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---- Parquet (the optional extra vaelab[tables]) ----------------------------------------------

def test_parquet_reads_like_the_csv_and_names_nulls_and_text(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow: pip install "
                                               "'vaelab[tables]'")
    import pyarrow.parquet as pq

    path, table = numbers_csv(tmp_path / "t.csv")
    pq.write_table(pa.table({"height": table[:, 0], "weight": table[:, 1],
                             "kind": table[:, 2].astype(np.int64)}), tmp_path / "t.parquet")
    options = DataConfig(label_column="kind")
    from_csv = load_dataset(str(path), "train", options=options)
    from_parquet = load_dataset(str(tmp_path / "t.parquet"), "train", options=options)
    assert torch.equal(from_csv.x, from_parquet.x) and torch.equal(from_csv.y, from_parquet.y)
    pq.write_table(pa.table({"a": [1.0, None, 3.0]}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match=r"column 'a' has a missing value in row 2"):
        load_dataset(str(tmp_path / "null.parquet"), "all")
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["1.5", "bob"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"column 'name' is not numeric: row 2 holds 'bob'"):
        load_dataset(str(tmp_path / "s.parquet"), "all")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet is not a readable Parquet file"):
        load_dataset(str(tmp_path / "junk.parquet"), "all")


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"t\.parquet: reading Parquet files needs pyarrow: "
                                        r"pip install 'vaelab\[tables\]'"):
        load_dataset(str(tmp_path / "t.parquet"), "all")


# ---- a tabular VAE: samples in the table's own units ------------------------------------------

def test_a_gaussian_vae_on_a_csv_gives_samples_in_the_original_units(tmp_path):
    import vaelab

    n = 2000
    path, table = numbers_csv(tmp_path / "t.csv", n=n, seed=1)
    config = tiny_config(path, "data.label_column='kind'", "model.likelihood='gaussian'",
                         "model.likelihood_variance='pixel'", "model.hidden=[64]",
                         "train.epochs=30", "train.batch_size=50", "train.lr=0.003")
    run = vaelab.fit(config, out=tmp_path / "run")
    raw = table[:, :2]
    # exact: the run's own test rows, taken back to the original units, are the file's rows
    test_rows = split_rows(n, "test", [0.8, 0.1, 0.1], 0)
    back = run.to_original(run.data("test").cpu()).double().numpy()
    np.testing.assert_allclose(back, raw[test_rows], rtol=1e-6)
    torch.manual_seed(0)
    samples = run.sample(4000, mean=False).double().cpu().numpy()  # x ~ p(x|z), z ~ p(z)
    torch.manual_seed(0)  # the same draws in model space: exactly x * std + mean per column
    model_space = run.model.sample(4000, mean=False).double().cpu().numpy()
    stats = run.meta["data"]["standardize"]
    train = raw[split_rows(n, "train", [0.8, 0.1, 0.1], 0)]
    np.testing.assert_allclose(stats["mean"], train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(samples, model_space * train.std(0) + train.mean(0), rtol=1e-6)
    assert samples.shape == (4000, 2)
    for j, (mu, sigma) in enumerate([(1000.0, 50.0), (-3.0, 0.01)]):
        m, s = samples[:, j].mean(), samples[:, j].std()
        se_mean, se_std = s / np.sqrt(len(samples)), s / np.sqrt(2 * len(samples))
        # 5 standard errors of the Monte Carlo estimate plus 0.1 sigma for the model's misfit
        # after 1200 steps (measured: 0.02 sigma); unstandardised output would sit near 0
        # with std ~1, i.e. 20 sigma off for the first column and 100x too wide for the second
        assert abs(m - raw[:, j].mean()) < 5 * se_mean + 0.1 * sigma, (j, m)
        assert abs(s - raw[:, j].std()) < 5 * se_std + 0.1 * sigma, (j, s)
        assert abs(raw[:, j].mean() - mu) < 5 * sigma / np.sqrt(n)  # the data are as drawn
    recon = run.reconstruct(run.data("test")).double().cpu().numpy()
    assert abs(recon[:, 0].mean() - raw[test_rows, 0].mean()) < 0.2 * 50
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["data"]["standardize"]["columns"] == ["height", "weight"]
    assert meta["data"]["label_column"] == "kind" and meta["event_shape"] == [2]


def test_standardization_round_trip_constant_column_and_damaged_record():
    from vaelab.data.standardize import Standardization

    x = np.array([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    stats = Standardization.fit(x)
    assert stats.std[1] == 1.0  # a constant column is only centred
    z = stats.apply(x)
    np.testing.assert_allclose(z[:, 1], 0)
    back = stats.invert(torch.from_numpy(z))
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-12)
    again = Standardization.from_record(stats.record(["a", "b"]), "meta.json")
    np.testing.assert_array_equal(again.mean, stats.mean)
    for bad in ({}, {"mean": [0.0], "std": [0.0]}, {"mean": [0.0, 1.0], "std": [1.0]},
                {"mean": "x", "std": [1.0]}):
        with pytest.raises(DataError, match=r"meta.json: data.standardize has no valid"):
            Standardization.from_record(bad, "meta.json")
