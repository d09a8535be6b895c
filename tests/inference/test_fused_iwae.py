"""The fused IWAE bound (fused_iwae.py) against autograd through objectives.iwae, same noise,
and its hand-derived gradients against finite differences."""

from __future__ import annotations

import pytest
import torch

from fused_step import one_step
from vaelab import rng
from vaelab.build import build_model, build_objective
from vaelab.config import ModelConfig, ObjectiveConfig
from vaelab.inference.fused_elbo import fused_plan
from vaelab.inference.fused_iwae import fused_gaussian_bernoulli_iwae
from vaelab.models import fastlinear
from vaelab.schedules import Progress

EVENT = (1, 6, 6)


def make(hidden: list[int], activation: str = "tanh", samples: int = 5, **objective):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=hidden, activation=activation), EVENT)
    return model, build_objective(ObjectiveConfig(name="iwae", samples=samples, **objective),
                                  EVENT)


def batch(n: int = 10) -> torch.Tensor:
    return (torch.rand(n, *EVENT, generator=torch.Generator().manual_seed(1)) < 0.4).float()


def run(model, objective, x, *, fused: bool, progress: Progress):
    objective.fused = fused
    return one_step(model, objective, x, progress)


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
@pytest.mark.parametrize("epoch", [0.5, 3.0], ids=["warm-up", "beta=1"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden,samples", [([], 1), ([16], 5), ([16, 8], 3)])
def test_fused_iwae_equals_autograd_through_the_general_path(hidden, samples, activation,
                                                              epoch, matmul):
    model, objective = make(hidden, activation, samples, warmup_epochs=2.0)
    fastlinear.set_matmul(model, matmul)  # train.matmul: both libraries, both paths
    x = batch()
    progress = Progress(step=3, epoch=epoch)
    fused, fused_grads = run(model, objective, x, fused=True, progress=progress)
    general, general_grads = run(model, objective, x, fused=False, progress=progress)
    assert "Fused" in type(fused.loss.grad_fn).__name__
    assert "Fused" not in type(general.loss.grad_fn).__name__
    for name in ("loss", "bound", "rec", "kl"):
        torch.testing.assert_close(getattr(fused, name), getattr(general, name),
                                   rtol=1e-5, atol=1e-5, msg=name)
    for name in general_grads:
        torch.testing.assert_close(fused_grads[name], general_grads[name], rtol=1e-4,
                                   atol=1e-6, msg=name)


def test_fused_iwae_gradients_match_finite_differences_in_float64():
    model, _ = make([5, 4], "tanh")
    model.double()
    plan = fused_plan(model)
    x = batch(4).double().flatten(1)
    eps = torch.randn(3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [p for layer in (*plan.encoder, *plan.decoder) for p in (layer.weight, layer.bias)]

    def loss(*ps):
        with torch.no_grad():
            for p, v in zip(params, ps, strict=True):
                p.copy_(v)
        return fused_gaussian_bernoulli_iwae(plan, x, eps, 0.7)[0]

    ps = [p.detach().clone().requires_grad_(True) for p in params]
    # gradcheck differentiates through the copies: compare the node's backward to finite
    # differences of its forward directly
    out = fused_gaussian_bernoulli_iwae(plan, x, eps, 0.7)[0]
    grads = torch.autograd.grad(out, params)
    for i, (p, g) in enumerate(zip(ps, grads, strict=True)):
        direction = torch.randn_like(p, generator=torch.Generator().manual_seed(i))
        h = 1e-6
        with torch.no_grad():
            plus = loss(*[q + h * direction if j == i else q for j, q in enumerate(ps)])
            minus = loss(*[q - h * direction if j == i else q for j, q in enumerate(ps)])
            loss(*ps)
        numeric = (plus - minus) / (2 * h)
        torch.testing.assert_close((g * direction).sum(), numeric, rtol=1e-5, atol=1e-8)


def test_fused_iwae_draws_the_noise_of_each_shard():
    """With K samples the fused noise is draw()'s, per rank of a sharded batch."""
    torch.manual_seed(3)
    loc, scale = torch.zeros(4, 2), torch.ones(4, 2)
    normal = torch.distributions.Normal(loc, scale)
    for world in (1, 2):
        for rank in range(world):
            with rng.sharded(rng.Shard(rank, world)):
                torch.manual_seed(5)
                expected = rng.draw(normal, (3,))
                torch.manual_seed(5)
                got = rng.standard_normal(4, 2, samples=3)
            torch.testing.assert_close(got, expected)


def test_negligible_weights_are_dropped_and_the_gradients_do_not_change():
    from vaelab.inference.fused_iwae import NEGLIGIBLE, negligible_to_zero

    w = torch.tensor([[0.5, 1e-21], [0.5 - 1e-21, 1e-19], [1e-40, 1.0 - 1e-19]])
    out = negligible_to_zero(w.clone())
    assert out[0, 1] == 0 and out[2, 0] == 0  # below NEGLIGIBLE (incl. a subnormal)
    assert out[1, 1] == w[1, 1] and out[0, 0] == w[0, 0]  # the rest untouched
    assert (out[out > 0] >= NEGLIGIBLE).all()
    # K=50, widely spread log-weights (about 3% of them negligible): gradients as autograd's
    model, objective = make([16], "tanh", samples=50)
    with torch.no_grad():
        model.encoder.net[-1].bias[3:].fill_(3.0)  # wide q: log w spread over hundreds of nats
    x = batch()
    progress = Progress(step=3, epoch=3.0)
    fused, fused_grads = run(model, objective, x, fused=True, progress=progress)
    general, general_grads = run(model, objective, x, fused=False, progress=progress)
    torch.testing.assert_close(fused.loss, general.loss, rtol=1e-5, atol=1e-4)
    for name in general_grads:
        torch.testing.assert_close(fused_grads[name], general_grads[name], rtol=1e-4,
                                   atol=1e-5, msg=name)
