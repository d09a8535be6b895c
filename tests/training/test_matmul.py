"""train.matmul: the GEMM library of the linear layers, chosen by timing (auto) and recorded
in the run, so resuming and loading multiply on the library the run trained on."""

from __future__ import annotations

import math

import pytest
import torch

from fused_step import one_step
from tiny import make_npz, tiny_config
from vaelab.api import fit, load_run
from vaelab.build import build_model, build_objective
from vaelab.config import ModelConfig, ObjectiveConfig
from vaelab.inference.fused_elbo import fused_plan
from vaelab.models import fastlinear, torch_private
from vaelab.schedules import Progress
from vaelab.training.runs import RunDir


@pytest.fixture
def timed(monkeypatch):
    """auto really times (conftest fixes VAELAB_MATMUL for the other tests), from a fresh
    per-process memory of earlier choices."""
    monkeypatch.delenv("VAELAB_MATMUL", raising=False)
    monkeypatch.setattr(fastlinear, "_CHOSEN", {})


def fake_timer(onednn: float, torch_: float):
    calls = []

    def timer(shapes):
        calls.append(list(shapes))
        return {"onednn": onednn, "torch": torch_}
    timer.calls = calls
    return timer


SHAPES = [(16, 64, 32), (16, 32, 8)]


@pytest.mark.skipif(not fastlinear.ENABLED, reason="oneDNN linear not available")
@pytest.mark.parametrize("onednn,torch_,expected", [
    (1.0, 2.0, "onednn"),  # clearly faster
    (2.0, 1.0, "torch"),
    (0.97, 1.0, "torch"),  # within the 5% margin: the public path
])
def test_auto_keeps_the_faster_library(timed, onednn, torch_, expected):
    timer = fake_timer(onednn, torch_)
    choice, timings = fastlinear.fastest_matmul(SHAPES, timer)
    assert choice == expected and timings == {"onednn": onednn, "torch": torch_}
    assert timer.calls == [SHAPES]
    again = fake_timer(torch_, onednn)  # the opposite answer, were it asked
    assert fastlinear.fastest_matmul(SHAPES, again)[0] == expected  # kept for the process
    assert again.calls == []


@pytest.mark.parametrize("env,expected", [("default", "torch"), ("torch", "torch"),
                                          ("onednn", "onednn")])
def test_the_environment_decides_without_timing(timed, monkeypatch, env, expected):
    monkeypatch.setenv("VAELAB_MATMUL", env)
    timer = fake_timer(1.0, 1.0)
    assert fastlinear.fastest_matmul(SHAPES, timer) == (expected, {})
    assert timer.calls == []


def test_public_only_means_torch_without_timing(timed):
    timer = fake_timer(0.1, 1.0)
    with torch_private.public_only():
        assert fastlinear.fastest_matmul(SHAPES, timer)[0] == "torch"
    assert timer.calls == []


@pytest.mark.skipif(not fastlinear.ENABLED, reason="oneDNN linear not available")
def test_the_real_timings_are_positive_for_both_libraries():
    timings = fastlinear.time_matmuls(SHAPES, repeats=2)
    assert set(timings) == {"onednn", "torch"}
    assert all(0 < t < 10 and math.isfinite(t) for t in timings.values())


def test_product_shapes_count_the_decoder_rows_times_the_samples():
    model = build_model(ModelConfig(latent_dim=3, hidden=[16]), (1, 6, 6))
    shapes = fastlinear.product_shapes(model, 10, 50, model.decoder)
    assert shapes == [(10, 36, 16), (10, 16, 6), (50, 3, 16), (50, 16, 36)]


def test_the_torch_library_never_calls_the_private_op(monkeypatch):
    model = build_model(ModelConfig(latent_dim=3, hidden=[16]), (1, 6, 6))
    fastlinear.set_matmul(model, "torch")
    plan = fused_plan(model)
    assert plan is not None and plan.public

    def refuse(*args, **kwargs):
        raise AssertionError("oneDNN's op was called")
    monkeypatch.setattr(torch_private, "linear_pointwise", refuse)
    x = (torch.rand(4, 1, 6, 6) < 0.5).float()
    model.decode(model.encode(x).mean).base_dist.logits.sum().backward()  # the layers
    for name, samples in (("elbo", 1), ("iwae", 2)):  # the fused paths
        objective = build_objective(ObjectiveConfig(name=name, samples=samples), (1, 6, 6))
        out, _ = one_step(model, objective, x, Progress(step=0, epoch=0.0))
        assert "Fused" in type(out.loss.grad_fn).__name__


def test_a_run_records_the_library_auto_chose_and_resumes_and_loads_on_it(timed, tmp_path):
    data = make_npz(tmp_path / "d.npz")
    run = fit(tiny_config(data, "train.matmul=auto"), out=tmp_path / "run", pictures=False)
    chosen = RunDir.existing(run.path).read_config().train.matmul
    assert chosen in ("onednn", "torch")
    assert run.config.train.matmul == chosen
    layers = [m for m in run.model.modules() if isinstance(m, fastlinear.Linear)]
    assert layers and all(m.matmul == chosen for m in layers)
    resumed = fit(None, resume=run.path, changes=["train.epochs=2"], pictures=False)
    assert resumed.config.train.matmul == chosen  # the saved choice, not timed again
    assert all(m.matmul == chosen for m in resumed.model.modules()
               if isinstance(m, fastlinear.Linear))
    assert load_run(run.path).config.train.matmul == chosen


@pytest.mark.skipif(not fastlinear.ENABLED, reason="oneDNN linear not available")
def test_loading_with_another_library_than_the_recorded_one(timed, tmp_path, monkeypatch):
    data = make_npz(tmp_path / "d.npz")
    run = fit(tiny_config(data, "train.matmul=torch"), out=tmp_path / "run", pictures=False)
    for asked in ("onednn", "torch"):
        loaded = load_run(run.path, matmul=asked)
        assert loaded.config.train.matmul == asked
        assert all(m.matmul == asked for m in loaded.model.modules()
                   if isinstance(m, fastlinear.Linear))
    monkeypatch.setattr(fastlinear, "fastest_matmul", lambda shapes: ("onednn", {}))
    assert load_run(run.path, matmul="auto").config.train.matmul == "onednn"  # timed again
    assert load_run(run.path).config.train.matmul == "torch"  # the recorded one
    assert RunDir.existing(run.path).read_config().train.matmul == "torch"  # file unchanged
    with pytest.raises(ValueError, match="matmul='mkl': choose auto, onednn or torch"):
        load_run(run.path, matmul="mkl")


def test_a_run_from_before_train_matmul_reads_as_onednn(tmp_path):
    data = make_npz(tmp_path / "d.npz")
    run = fit(tiny_config(data, "train.matmul=torch"), out=tmp_path / "run", pictures=False)
    path = RunDir.existing(run.path).config_path
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith("matmul"))
    path.write_text(text + "\n")
    assert RunDir.existing(run.path).read_config().train.matmul == "onednn"


def test_timing_leaves_the_global_random_stream_alone(timed):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    fastlinear.fastest_matmul(SHAPES)  # really timed: fresh memory, no VAELAB_MATMUL
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
