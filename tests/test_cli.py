"""End-to-end CLI runs on tiny data, and every bad input giving one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiny import TINY_OVERRIDES, make_npz
from vaelab.cli import main


def sets(*items: str) -> list[str]:
    out = []
    for item in items:
        out += ["--set", item]
    return out


def train_args(data, out, *extra):
    return ["train", "--out", str(out), *sets(f"data.name='{data}'", *TINY_OVERRIDES, *extra)]


@pytest.fixture
def data(tmp_path):
    return make_npz(tmp_path / "tiny.npz")


def test_train_writes_a_complete_run_and_eval_reads_it(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out, "train.epochs=2")) == 0
    printed = capsys.readouterr().out
    assert "test ELBO" in printed and "test NLL" in printed and "pictures:" in printed
    for name in ("config.toml", "meta.json", "metrics.jsonl", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "samples.png",
                 "reconstructions.png", "curves.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_bound", "train_rec", "train_kl", "val_bound", "wall_time"):
        assert key in records[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective_audit"]["reduction"].startswith("nats per datapoint")
    assert main(["eval", str(out), "--json", "--iw-samples", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("elbo", "elbo_stderr", "rec", "kl", "log_likelihood", "log_likelihood_stderr",
                "nll", "iw_samples", "active_units", "latent_units", "n", "split"):
        assert key in report, key
    assert report["iw_samples"] == 16 and report["nll"] == -report["log_likelihood"]
    # the IS estimate (K=16) is at least the ELBO on average, up to Monte Carlo noise
    assert report["log_likelihood"] > report["elbo"] - 3 * report["elbo_stderr"]
    # the text report carries the same numbers
    assert main(["eval", str(out), "--split", "valid", "--iw-samples", "16"]) == 0
    printed = capsys.readouterr().out
    assert "valid ELBO:" in printed and "valid NLL:" in printed and "K=16" in printed
    assert "active units:" in printed and "KL per dimension" in printed
    for bad in ("0", "-1"):  # not "all but the last point", not a torch error
        assert main(["eval", str(out), "--limit", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"vaelab eval: error: --limit {bad}: must be an integer >= 1 (the first "
                       "N points of the split); leave it out to evaluate the whole split")
    assert main(["eval", str(out), "--limit", "3", "--json", "--iw-samples", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    # another GEMM library than the run recorded: the same report to float32 rounding
    recorded = main(["eval", str(out), "--json", "--iw-samples", "16"]), \
        json.loads(capsys.readouterr().out)
    for matmul in ("onednn", "torch", "auto"):
        assert main(["eval", str(out), "--json", "--iw-samples", "16", "--matmul", matmul]) == 0
        other = json.loads(capsys.readouterr().out)
        for key in ("elbo", "log_likelihood"):
            assert other[key] == pytest.approx(recorded[1][key], rel=1e-5, abs=1e-4), matmul


def test_eval_runs_on_the_threads_the_run_trained_on(tmp_path, data, capsys, monkeypatch):
    """A run trained with train.threads=1 (e.g. one of two side by side) is evaluated on one
    thread unless --threads says otherwise; --threads 0 leaves torch's setting."""
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "run"
    try:
        assert main(train_args(data, out, "train.threads=1")) == 0
        seen = []
        real_evaluate = __import__("vaelab.api", fromlist=["Run"]).Run.evaluate

        def evaluate(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return real_evaluate(self, *args, **kwargs)

        monkeypatch.setattr("vaelab.api.Run.evaluate", evaluate)
        for argv, expected in (([], 1), (["--threads", "2"], 2), (["--threads", "0"], 2)):
            assert main(["eval", str(out), "--iw-samples", "0", *argv]) == 0, argv
            assert seen[-1] == expected, argv
        err = error_of(capsys, ["eval", str(out), "--threads", "-1"])
        assert err == ("vaelab eval: error: --threads -1: must be >= 0 (0 = all cores); leave "
                       "it out for the run's train.threads")
        from vaelab.api import load_run

        for bad in (-1, True, "all", 1.5):
            with pytest.raises(ValueError, match="give an integer >= 0"):
                load_run(out, threads=bad)
    finally:
        torch.set_num_threads(threads)


def test_resume_continues_from_the_last_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    config = (out / "config.toml").read_text()
    (out / "config.toml").write_text(config.replace("epochs = 1", "epochs = 2"))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["step"] == 2 * records[0]["step"]


def error_of(capsys, argv) -> str:
    capsys.readouterr()  # drop what earlier commands printed (their epoch lines)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_existing_run_folder_is_refused_and_untouched(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    err = error_of(capsys, train_args(data, out))
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main([*train_args(data, out, "train.epochs=1"), "--overwrite"]) == 0


def test_unknown_config_key_suggests_the_right_one(tmp_path, data, capsys):
    err = error_of(capsys, train_args(data, tmp_path / "r", "model.latnet_dim=3"))
    assert "model.latent_dim" in err
    assert not (tmp_path / "r").exists()


def test_unwritable_output_folder(tmp_path, data, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = error_of(capsys, train_args(data, blocker / "run"))
    assert "cannot write" in err or "not a directory" in err
    assert blocker.read_text() == "not a folder"


def test_values_outside_unit_interval_for_bernoulli(tmp_path, capsys):
    data = make_npz(tmp_path / "bytes.npz", scale=255.0)
    err = error_of(capsys, train_args(data, tmp_path / "r"))
    assert "[0, 1]" in err or "[0,1]" in err
    assert not (tmp_path / "r").exists()
    # the same data are fine for a Gaussian likelihood
    assert main(train_args(data, tmp_path / "g", "model.likelihood='gaussian'")) == 0


@pytest.mark.parametrize("payload,fragment", [
    ({"x": np.full((8, 4), np.nan, dtype=np.float32)}, "NaN"),
    ({"x": np.array(["a", "b"])}, "dtype"),
    ({"x": np.zeros((2, 3, 4, 5, 6), dtype=np.float32)}, "shape"),
])
def test_bad_npz_files(tmp_path, capsys, payload, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **payload)
    argv = ["train", "--out", str(tmp_path / "r"),
            *sets(f"data.name='{path}'", "data.train_split='all'", "data.valid_split=''",
                  "data.test_split=''", *TINY_OVERRIDES)]
    err = error_of(capsys, argv)
    assert fragment.lower() in err.lower()


def test_missing_dataset_says_where_it_looked_and_how_to_fetch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("vaelab.data.sources.KNOWN_LOCAL_COPIES", {}, raising=False)
    err = error_of(capsys, ["train", "--out", str(tmp_path / "r"),
                            *sets("data.name='mnist'", *TINY_OVERRIDES)])
    assert "vaelab data fetch mnist" in err and "empty-cache" in err


def test_data_list_runs(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "fashion-mnist" in out


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    err = error_of(capsys, ["eval", str(tmp_path)])
    assert "not a vaelab run folder" in err
