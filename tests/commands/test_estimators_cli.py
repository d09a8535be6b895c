"""`vaelab estimators` and estimator choices in training, end to end on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from tiny import TINY_OVERRIDES, make_npz, tiny_config
from vaelab.api import fit
from vaelab.cli import main
from vaelab.config import ConfigError
from vaelab.evaluation.gradients import variance_history
from vaelab.training.runs import load_checkpoint


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture
def data(tmp_path):
    return make_npz(tmp_path / "tiny.npz")


def write_config(tmp_path, data, *lines: str):
    path = tmp_path / "c.toml"
    path.write_text("\n".join([f"[data]\nname = '{data}'", "[model]\nhidden = [16]",
                               "latent_dim = 2", *lines]) + "\n")
    return path


def test_estimators_on_a_fresh_gaussian_model_writes_table_json_and_plot(tmp_path, data,
                                                                         capsys):
    config = write_config(tmp_path, data)
    out = tmp_path / "est"
    code = main(["estimators", str(config), "--draws", "6", "--reference-draws", "30",
                 "--batch", "8", "--baseline-steps", "5", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    labels = [r["estimator"] for r in result["rows"]]
    assert labels == ["pathwise", "score-function", "score-function+moving-average",
                      "score-function+nvil", "score-function+leave-one-out"]
    assert result["reference"]["estimator"] == "pathwise"
    loo = result["rows"][-1]
    assert loo["samples"] == 2  # leave-one-out needs K >= 2
    for row in result["rows"]:
        for key in ("variance_total", "variance_encoder", "variance_decoder", "snr_encoder",
                    "relative_bias_total", "ms_per_estimate"):
            assert key in row and row[key] == row[key], key  # present and not NaN
        assert row["variance_total"] == pytest.approx(row["variance_encoder"]
                                                      + row["variance_decoder"])
    for name in ("estimators.md", "estimators.json", "estimators.png"):
        assert (out / name).is_file()
    assert "| score-function+nvil |" in (out / "estimators.md").read_text()


@pytest.mark.parametrize("overrides", [
    ("model.latent=categorical", "model.num_classes=3"),
    # the relaxed KL exists only for the relaxed estimators: REINFORCE and the reference
    # are measured on the discrete ELBO instead of failing
    ("model.latent=bernoulli", "objective.kl=relaxed"),
])
def test_estimators_on_a_trained_discrete_run(tmp_path, data, capsys, overrides):
    run_dir = tmp_path / "run"
    config = tiny_config(data, *overrides, "train.progress=false")
    fit(config, out=run_dir, pictures=False)
    code = main(["estimators", str(run_dir), "--draws", "4", "--reference-draws", "8",
                 "--batch", "8", "--baseline-steps", "2", "--baselines", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("| score-function |", "| gumbel-softmax |", "| straight-through |"):
        assert name in printed
    assert "reference: score-function+leave-one-out" in printed
    assert (run_dir / "estimators" / "estimators.json").is_file()


def test_estimators_pathwise_on_discrete_is_a_clear_error(tmp_path, data, capsys):
    config = write_config(tmp_path, data, "latent = 'bernoulli'")
    code = main(["estimators", str(config), "--estimators", "pathwise", "--draws", "4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pathwise" in err and "score-function" in err and "gumbel-softmax" in err
    assert len(err.strip().splitlines()) == 1


def test_train_pathwise_on_discrete_fails_before_making_a_run_folder(tmp_path, data, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out),
            *sets(f"data.name='{data}'", *TINY_OVERRIDES, "model.latent=categorical",
                  "objective.estimator=pathwise")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "objective.estimator=pathwise" in err and "straight-through" in err
    assert not out.exists()


def test_score_function_training_trains_the_baseline_and_logs_gradient_variance(tmp_path,
                                                                                data):
    out = tmp_path / "run"
    config = tiny_config(data, "objective.estimator=score-function",
                         "objective.baseline=nvil", "objective.baseline_hidden=4",
                         "train.epochs=2", "train.grad_variance_every=2",
                         "train.grad_variance_draws=3")
    run_ = fit(config, out=out, pictures=False)
    assert run_ is not None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    history = variance_history(records)
    steps_per_epoch = 3  # 48 training points / batch 16
    assert [h["step"] for h in history] == [1, 3, 5]
    assert all(h["grad_variance_total"] > 0 and h["grad_draws"] == 3 for h in history)
    assert all(h["grad_variance_total"] == pytest.approx(h["grad_variance_encoder"]
                                                         + h["grad_variance_decoder"])
               for h in history)
    assert records[-1]["step"] == 2 * steps_per_epoch
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    weights = state["objective"]["estimator.baseline.net.3.weight"]
    assert weights.abs().sum() > 0  # started at zero: the baseline was trained
    assert state["objective"]["estimator.baseline.mean.steps"].item() == 2 * steps_per_epoch


def test_measurement_does_not_change_training(tmp_path, data):
    """The gradient-variance hook runs on a forked RNG: same parameters with or without."""
    runs = []
    for every in (0, 1):
        config = tiny_config(data, "objective.estimator=score-function",
                             "objective.baseline=moving-average",
                             f"train.grad_variance_every={every}", "eval.iw_samples=0")
        runs.append(fit(config, out=tmp_path / f"run{every}", pictures=False))
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_grad_variance_settings_are_config_errors(tmp_path, data):
    with pytest.raises(ConfigError, match="train.grad_variance_draws=1: must be an integer >= 2"):
        tiny_config(data, "train.grad_variance_every=1", "train.grad_variance_draws=1")
    config = tiny_config(data, "train.grad_variance_every=1")
    config.train.grad_variance_draws = 1  # set in Python: fit checks it before anything
    with pytest.raises(ConfigError, match="train.grad_variance_draws=1: must be"):
        fit(config, out=tmp_path / "run", pictures=False)
    assert not (tmp_path / "run").exists()


def test_resume_restores_the_baseline_and_matches_an_uninterrupted_run(tmp_path, data):
    """Two epochs in one go equal one epoch + resume: the checkpoint carries the NVIL
    baseline's network, running means and optimizer state."""
    extra = ("objective.estimator=score-function", "objective.baseline=nvil",
             "objective.baseline_hidden=4", "eval.iw_samples=0", "data.valid_split=''")
    whole = fit(tiny_config(data, "train.epochs=2", *extra), out=tmp_path / "whole",
                pictures=False)
    fit(tiny_config(data, "train.epochs=1", *extra), out=tmp_path / "part", pictures=False)
    config = (tmp_path / "part" / "config.toml").read_text()
    (tmp_path / "part" / "config.toml").write_text(config.replace("epochs = 1", "epochs = 2"))
    resumed = fit(tiny_config(data, *extra), resume=tmp_path / "part", pictures=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    states = [load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["objective"]
              for name in ("whole", "part")]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key])
