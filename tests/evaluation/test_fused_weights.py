"""The evaluator's fused importance weights (evaluation/fused_weights.py) against the
general path's distribution objects: same draws, same weights, same log-likelihoods."""

from __future__ import annotations

import pytest
import torch

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.evaluation.evaluate import importance_log_likelihood
from vaelab.evaluation.fused_weights import fused_log_weights
from vaelab.inference.fused_elbo import fused_plan
from vaelab.models import fastlinear

EVENT = (1, 6, 6)


def make(activation: str = "tanh", matmul: str = "onednn", **model):
    torch.manual_seed(0)
    m = build_model(ModelConfig(latent_dim=3, hidden=[16, 8], activation=activation, **model),
                    EVENT).eval()
    fastlinear.set_matmul(m, matmul)
    return m


def data(n: int = 7, binary: bool = True) -> torch.Tensor:
    u = torch.rand(n, *EVENT, generator=torch.Generator().manual_seed(1))
    return (u < 0.4).float() if binary else u


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "grey"])
def test_fused_weights_equal_the_distribution_objects(activation, matmul, binary):
    model, x = make(activation, matmul), data(binary=binary)
    plan = fused_plan(model)
    assert plan is not None
    with torch.no_grad():
        q = model.encode(x)
        torch.manual_seed(5)
        z = q.sample((11,))
        general = model.decode(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
        torch.manual_seed(5)  # the same draws
        fused = fused_log_weights(plan, x, 11, q.base_dist.loc, q.base_dist.scale)
    assert fused.shape == general.shape == (11, 7)
    torch.testing.assert_close(fused, general, rtol=1e-5, atol=1e-4)


def test_the_log_likelihood_is_the_same_with_the_fused_weights_on_or_off():
    model, x = make(), data(25)
    runs = {}
    for fused in (True, False):
        torch.manual_seed(3)
        runs[fused] = importance_log_likelihood(model, x, samples=70, batch_size=10,
                                                sample_chunk=30, fused=fused)
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("change", [{"prior": "mixture"}, {"likelihood": "gaussian"},
                                    {"latent": "gaussian-full"}])
def test_other_models_keep_the_general_path(change):
    model = make(**change)
    assert fused_plan(model) is None  # so importance_log_likelihood draws as before
