"""The fused ELBO (fused_elbo.py): its hand-derived gradients against finite differences and
against autograd through the general path, when it is used and when not, and a whole run
with it on and off."""

from __future__ import annotations

import json

import pytest
import torch

from fused_step import one_step
from tiny import make_npz, tiny_config
from vaelab import rng
from vaelab.api import fit
from vaelab.build import build_model, build_objective
from vaelab.config import ModelConfig, ObjectiveConfig
from vaelab.inference.fused_elbo import fused_gaussian_bernoulli_elbo, fused_plan
from vaelab.models import fastlinear
from vaelab.schedules import Progress
from vaelab.training.speed import accelerate

EVENT = (1, 6, 6)


def make(hidden: list[int], activation: str = "relu", **objective):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=hidden, activation=activation), EVENT)
    return model, build_objective(ObjectiveConfig(**objective), EVENT)


def batch(n: int = 10) -> torch.Tensor:
    return (torch.rand(n, *EVENT, generator=torch.Generator().manual_seed(1)) < 0.4).float()


START = Progress(step=0, epoch=0.0)


def run(model, objective, x, *, fused: bool, progress: Progress = START):
    """Loss, bound terms and parameter gradients of one step, fused or not, same noise."""
    objective.fused = fused
    return one_step(model, objective, x, progress)


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [[], [16], [16, 8]], ids=["linear", "one", "two"])
def test_fused_equals_autograd_through_the_general_path(hidden, activation, matmul):
    model, objective = make(hidden, activation, warmup_epochs=2.0)  # beta 0.25 at epoch 0.5
    fastlinear.set_matmul(model, matmul)  # train.matmul: both libraries, both paths
    x = batch()
    progress = Progress(step=3, epoch=0.5)
    fused, fused_grads = run(model, objective, x, fused=True, progress=progress)
    general, general_grads = run(model, objective, x, fused=False, progress=progress)
    assert "Fused" in type(fused.loss.grad_fn).__name__
    assert "Fused" not in type(general.loss.grad_fn).__name__
    for name in ("loss", "bound", "rec", "kl"):
        torch.testing.assert_close(getattr(fused, name), getattr(general, name),
                                   rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == general_grads.keys()
    for name in general_grads:
        torch.testing.assert_close(fused_grads[name], general_grads[name], rtol=1e-4,
                                   atol=1e-6, msg=name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fused_gradients_match_finite_differences_in_float64(activation):
    """The hand-derived backward pass, checked without the general path at all."""
    model, _ = make([5, 4], activation)
    model.double()
    plan = fused_plan(model)
    x = batch(4).double()
    eps = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters()]

    def loss(*_params):  # gradcheck perturbs the parameters in place
        return fused_gaussian_bernoulli_elbo(plan, x, eps, 0.7)[0]

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fused_refuses_double_backward():
    model, objective = make([16])
    loss = objective(model, batch(), START).loss
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="twice|does not require grad"):
        torch.autograd.grad(sum(g.sum() for g in grads), list(model.parameters()))


def test_fused_draws_the_noise_of_each_shard():
    """Under data parallelism each rank's datapoints get the noise of a 1-process run."""
    model, objective = make([16])
    x = batch(10)
    with rng.sharded(rng.Shard(rank=1, world=2)):
        fused, _ = run(model, objective, x[5:], fused=True)
        general, _ = run(model, objective, x[5:], fused=False)
    torch.testing.assert_close(fused.bound, general.bound, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", [
    {"objective": {"samples": 2}},
    {"objective": {"free_bits": 0.1}},
    {"objective": {"kl": "mc"}},
    {"objective": {"estimator": "score-function"}},
    {"objective": {"name": "iwae", "samples": 2, "estimator": "score-function"}},
    {"model": {"activation": "elu"}},
    {"model": {"likelihood": "gaussian"}},
    {"model": {"prior": "mixture"}},
    {"model": {"latent": "gaussian-full"}},
    {"model": {"encoder": "conv", "decoder": "conv"}},
], ids=lambda c: ",".join(f"{k}={v}" for part in c.values() for k, v in part.items()))
def test_other_models_and_objectives_take_the_general_path(change):
    """(The pathwise IWAE of this model has its own fused node: test_fused_iwae.py.)"""
    model_cfg = ModelConfig(latent_dim=3, hidden=[16], channels=[4, 8],
                            **change.get("model", {}))
    torch.manual_seed(0)
    model = build_model(model_cfg, EVENT)
    objective = build_objective(ObjectiveConfig(**change.get("objective", {})), EVENT)
    out = objective(model, batch(), START)
    assert "Fused" not in type(out.loss.grad_fn).__name__


def test_no_fusion_without_gradients_for_the_data_or_under_bf16():
    model, objective = make([16])
    with torch.no_grad():
        assert objective(model, batch(), START).loss.grad_fn is None
    x = batch().requires_grad_()  # d loss / d x: the fused node gives no input gradient
    out = objective(model, x, START)
    assert "Fused" not in type(out.loss.grad_fn).__name__
    out.loss.backward()
    assert x.grad is not None
    accelerate([model.encoder, model.decoder], precision="bf16")
    out = objective(model, batch(), START)
    assert "Fused" not in type(out.loss.grad_fn).__name__


def test_a_run_trains_the_same_with_the_fused_path_on_or_off(tmp_path):
    data = make_npz(tmp_path / "d.npz", n=128)
    runs = {}
    for fused in (True, False):
        config = tiny_config(data, "train.epochs=2", f"train.fused={str(fused).lower()}")
        runs[fused] = fit(config, out=tmp_path / f"fused-{fused}", pictures=False)
    for fused, run in runs.items():
        step = json.loads((run.path / "summary.json").read_text())["training_step"]
        assert step.startswith("fused ELBO") == fused
    on, off = runs[True].model.state_dict(), runs[False].model.state_dict()
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=1e-3, atol=1e-4, msg=name)
