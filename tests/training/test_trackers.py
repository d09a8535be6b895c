"""train.loggers: TensorBoard and MLflow get the same numbers as metrics.jsonl, read back
with their own readers; a missing extra fails before training with the pip command."""

from __future__ import annotations

import json

import pytest

import vaelab
from tiny import make_npz, tiny_config
from vaelab.training import trackers

tb = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    config = tiny_config(make_npz(root / "data.npz"), "train.epochs=2",
                         "train.loggers=['tensorboard', 'mlflow']", "train.log_every_steps=1")
    return vaelab.fit(config, out=root / "run")


def records(run):
    return [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_equal_metrics_jsonl(run):
    acc = tb.EventAccumulator(str(run.path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    history = records(run)
    for key in ("train_bound", "train_kl", "val_bound", "images_per_sec"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [r["epoch"] for r in history]
        # TensorBoard stores float32
        assert [e.value for e in events] == pytest.approx([r[key] for r in history], rel=1e-6)
    steps = acc.Scalars("step/bound")
    assert [e.step for e in steps] == list(range(1, history[-1]["step"] + 1))
    summary = json.loads((run.path / "summary.json").read_text())
    assert acc.Scalars("test/elbo")[0].value == pytest.approx(summary["test"]["elbo"], rel=1e-6)
    assert "samples" in tags["images"] and "reconstructions" in tags["images"]


def test_mlflow_metrics_equal_metrics_jsonl(run):
    state = json.loads((run.path / "trackers.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=state["mlflow_uri"])
    history = records(run)
    for key in ("train_bound", "val_rec", "lr"):
        got = sorted(client.get_metric_history(state["mlflow_run_id"], f"epoch/{key}"),
                     key=lambda m: m.step)
        assert [m.step for m in got] == [r["epoch"] for r in history]
        assert [m.value for m in got] == [r[key] for r in history]  # float64: exactly equal
    remote = client.get_run(state["mlflow_run_id"])
    assert remote.data.params["train.epochs"] == "2"
    assert remote.data.params["model.hidden"] == "[16]"
    summary = json.loads((run.path / "summary.json").read_text())
    assert remote.data.metrics["test/nll"] == summary["test"]["nll"]
    pictures = {f.path for f in client.list_artifacts(state["mlflow_run_id"], "pictures")}
    assert "pictures/samples.png" in pictures


def test_a_missing_extra_fails_before_training_with_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else object())
    config = tiny_config(make_npz(tmp_path / "data.npz"), "train.loggers=['mlflow']")
    with pytest.raises(ValueError, match=r"pip install 'vaelab\[mlflow\]'"):
        vaelab.fit(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="not a tracker"):
        trackers.check_loggers(["wandb"])
