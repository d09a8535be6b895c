"""Evaluation repeats to the last digit (eval.seed), honours limits, and sizes the final
importance sampling to the run."""

from __future__ import annotations

import json

import pytest
import torch

import vaelab
from tiny import make_npz, tiny_config
from vaelab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-seed")
    config = tiny_config(make_npz(root / "data.npz"), "eval.iw_samples=64",
                         "eval.short_run_iw_samples=16")
    return vaelab.fit(config, out=root / "run", pictures=False)


def eval_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_vaelab_eval_twice_gives_identical_json(run, capsys):
    first = eval_json(capsys, str(run.path))
    second = eval_json(capsys, str(run.path))
    assert first == second and first["seed"] == 0
    # the seed is what makes them equal: another seed draws other noise
    other = eval_json(capsys, str(run.path), "--seed", "1")
    assert other["log_likelihood"] != first["log_likelihood"]
    assert other["elbo"] != first["elbo"]


def test_evaluation_leaves_the_callers_random_stream_alone(run):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run.evaluate("test", iw_samples=4)
    assert torch.equal(torch.rand(3), expected)


def test_limit_caps_the_points(run, capsys):
    assert eval_json(capsys, str(run.path), "--limit", "5", "-k", "4")["n"] == 5
    run.config.eval.limit = 7
    try:
        assert run.evaluate("test", iw_samples=4)["n"] == 7
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            run.evaluate("test", iw_samples=4, limit=0)  # an explicit limit counts points
    finally:
        run.config.eval.limit = 0
    capsys.readouterr()
    assert main(["eval", str(run.path), "--limit", "-1"]) == 2
    assert "--limit -1: must be an integer >= 1" in capsys.readouterr().err


def test_a_short_run_is_evaluated_with_the_smaller_k_and_says_so(run):
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["test"]["iw_samples"] == 16
    assert "K=16 instead of eval.iw_samples=64" in summary["test_note"]
    # the final evaluation repeats to the last digit
    assert json.loads(json.dumps(run.evaluate("test", iw_samples=16))) == summary["test"]
    # and `vaelab eval` uses the config's K
    assert run.evaluate("test")["iw_samples"] == 64


def test_evaluation_runs_where_the_run_says(run):
    loaded = vaelab.load_run(run.path, device="cpu")
    assert loaded.device.type == "cpu"
    report = loaded.evaluate("test", iw_samples=4)
    assert report == run.evaluate("test", iw_samples=4)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            vaelab.load_run(run.path, device="cuda")
