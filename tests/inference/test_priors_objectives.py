"""KL warm-up, free bits (per dimension and per group) and the IWAE bound under warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.build import build_model, build_objective, kl_weight
from vaelab.config import ConfigError, ModelConfig, ObjectiveConfig
from vaelab.inference.objectives import apply_free_bits, elbo, iwae
from vaelab.schedules import Progress


def test_kl_warm_up_is_linear_from_zero_to_beta():
    cfg = ObjectiveConfig(beta=2.0, warmup_epochs=4.0)
    weights = [kl_weight(cfg, Progress(step=0, epoch=e)) for e in (0.0, 1.0, 2.5, 4.0, 9.0)]
    assert weights == pytest.approx([0.0, 0.5, 1.25, 2.0, 2.0])
    assert kl_weight(ObjectiveConfig(beta=0.7), Progress(0, 0.0)) == 0.7


def test_warm_up_reaches_the_loss_but_not_the_reported_bound():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=[8]), (6,)).double()
    x = torch.bernoulli(torch.rand(16, 6, dtype=torch.float64))
    objective = build_objective(ObjectiveConfig(warmup_epochs=2.0))
    outs = []
    for epoch in (0.0, 1.0):
        torch.manual_seed(1)
        outs.append(objective(model, x, Progress(0, epoch)))
    torch.testing.assert_close(outs[0].bound, outs[1].bound)  # the true ELBO both times
    # loss = -(rec - beta kl): beta 0 -> -rec; beta 1/2 -> -rec + kl/2
    torch.testing.assert_close(outs[0].loss, -outs[0].rec.mean())
    torch.testing.assert_close(outs[1].loss, -(outs[1].rec - 0.5 * outs[1].kl).mean())


def test_iwae_warm_up_tempers_the_weights_and_reports_the_true_bound():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=[8]), (6,)).double()
    x = torch.bernoulli(torch.rand(8, 6, dtype=torch.float64))
    torch.manual_seed(1)
    cold = iwae(model, x, samples=4, beta=0.0)
    torch.manual_seed(1)
    true = iwae(model, x, samples=4)
    torch.testing.assert_close(cold.bound, true.bound)
    torch.testing.assert_close(true.loss, -true.bound.mean())
    # beta = 0: log w = log p(x|z), so the loss is -mean_b logmeanexp_k log p(x|z_k)
    torch.manual_seed(1)
    z = model.encode(x).rsample((4,))
    log_px_z = model.decode(z).log_prob(x)
    expected = -(torch.logsumexp(log_px_z, 0) - math.log(4)).mean()
    torch.testing.assert_close(cold.loss, expected)


def test_free_bits_per_dimension_and_per_group():
    kl = torch.tensor([[0.1, 0.9, 0.2, 3.0],
                       [0.3, 1.1, 0.0, 1.0]], requires_grad=True)  # batch means .2 1 .1 2
    lam = 0.5
    per_dim = apply_free_bits(kl, lam)
    # batch mean = sum_d max(lam, mean KL_d) = .5 + 1 + .5 + 2
    torch.testing.assert_close(per_dim.mean(), torch.tensor(4.0))
    per_dim.mean().backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0, .5, 0, .5], [0, .5, 0, .5]]))
    kl.grad = None
    grouped = apply_free_bits(kl, 1.5, groups=2)  # group means 1.2 and 2.1
    torch.testing.assert_close(grouped.mean(), torch.tensor(1.5 + 2.1))
    grouped.mean().backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0, 0, .5, .5], [0, 0, .5, .5]]))
    with pytest.raises(ValueError, match="free_bits_groups=3 does not divide the 4"):
        apply_free_bits(kl, 1.0, groups=3)


def test_free_bits_groups_reach_the_elbo():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=4, hidden=[8]), (6,)).double()
    x = torch.bernoulli(torch.rand(16, 6, dtype=torch.float64))
    torch.manual_seed(1)
    out = elbo(model, x, free_bits=100.0, free_bits_groups=2)  # every group under the floor
    torch.testing.assert_close(out.loss, -(out.rec.mean() - 200.0))


@pytest.mark.parametrize("kw,match", [
    (dict(name="iwae", samples=5, free_bits=0.5), "objective.free_bits applies to the KL"),
    (dict(free_bits=-1.0), "objective.free_bits=-1.0: must be a number >= 0"),
    (dict(free_bits_groups=-2), "free_bits_groups=-2: must be an integer >= 0"),
])
def test_bad_free_bits_settings_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        build_objective(ObjectiveConfig(**kw))
