"""Discrete latents: REINFORCE against the exact gradient by enumeration; the Gumbel-softmax
gradient's bias, measured against the same exact gradient, shrinks with the temperature.

The tiny model has 2 categorical variables x 3 classes (9 codes) or 3 bits (8 codes) and
4-pixel binary images (all 16 of them are the data), so the ELBO is an exact finite sum
over codes and autograd differentiates it w.r.t. every encoder and decoder parameter.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vaelab.build import build_model, build_objective, check_estimator
from vaelab.config import ConfigError, ModelConfig, ObjectiveConfig
from vaelab.evaluation.gradients import fit_baseline, measure, parameter_groups
from vaelab.inference.estimators import EstimatorError, Pathwise

Z = 4.0
ZMAX = 4.5  # per-coordinate bound over ~100-190 coordinates
EVENT = (1, 2, 2)


def tiny_model(latent: str, prior: str = "uniform", seed: int = 0):
    cfg = ModelConfig(latent=latent, latent_dim=2 if latent == "categorical" else 3,
                      num_classes=3, hidden=[8], prior=prior)
    torch.manual_seed(seed)
    model = build_model(cfg, EVENT).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # q(z|x) and p(x|z) well away from uniform
        if prior == "learned":
            model.prior_module.logits.normal_()
    return model


def all_codes(model) -> torch.Tensor:
    shape = model.latent_shape
    if len(shape) == 2:
        return torch.stack([F.one_hot(torch.tensor(c), shape[1]).double()
                            for c in itertools.product(range(shape[1]), repeat=shape[0])])
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=shape[0])),
                        dtype=torch.double)


def all_images() -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)),
                        dtype=torch.double).view(16, *EVENT)


def exact_elbo(model, x: torch.Tensor) -> torch.Tensor:
    """sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)] over every code: (B,)."""
    z = all_codes(model)
    z = z.unsqueeze(1).expand(z.shape[0], x.shape[0], *z.shape[1:])  # (V, B, *latent)
    log_q = model.encode(x).log_prob(z)
    log_px_z, log_pz = model.log_joint(x, z)
    return (log_q.exp() * (log_px_z + log_pz - log_q)).sum(0)


def exact_loss_gradient(model, x: torch.Tensor) -> torch.Tensor:
    groups = parameter_groups(model)
    params = [p for g in ("encoder", "decoder") for p in groups[g]]
    grads = torch.autograd.grad(-exact_elbo(model, x).mean(), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads, strict=True)]).double()


def objective_for(**kw):
    return build_objective(ObjectiveConfig(**kw), event_shape=EVENT, discrete=True).double()


REINFORCE_CASES = [
    ("categorical", "uniform", dict(kl="analytic")),
    ("categorical", "learned", dict(kl="mc")),
    ("categorical", "uniform", dict(kl="analytic", baseline="moving-average")),
    ("categorical", "uniform", dict(kl="mc", baseline="nvil", baseline_hidden=8)),
    ("categorical", "learned", dict(kl="analytic", baseline="leave-one-out", samples=3)),
    ("bernoulli", "uniform", dict(kl="analytic")),
    ("bernoulli", "learned", dict(kl="mc", baseline="leave-one-out", samples=2)),
]


@pytest.mark.parametrize(("latent", "prior", "kw"), REINFORCE_CASES,
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_reinforce_matches_enumerated_gradient(latent, prior, kw):
    model = tiny_model(latent, prior)
    x = all_images()
    exact = exact_loss_gradient(model, x)
    objective = objective_for(estimator="score-function", **kw)
    xr = x.repeat(10, 1, 1, 1)
    torch.manual_seed(1)
    fit_baseline(model, objective, xr, steps=100, lr=0.01)
    stats = measure(model, objective, xr, 300)
    se = (stats.var / stats.draws).sqrt()
    varying = se > 0
    # coordinates with no variance (none expected here) must be exact
    assert (stats.mean[~varying] - exact[~varying]).abs().max().item() < 1e-9 \
        if (~varying).any() else True
    z = ((stats.mean - exact)[varying] / se[varying]).abs()
    assert z.max().item() < ZMAX, f"max |z| {z.max().item():.2f} of {z.numel()} coordinates"


def squared_bias(model, objective, x, exact, runs: int = 8, draws: int = 40):
    """||E g - exact||^2, estimated without its Monte Carlo floor, from ``runs`` independent
    measurements; returns (mean, standard error) over the runs."""
    values = []
    for _ in range(runs):
        stats = measure(model, objective, x, draws)
        values.append((stats.mean - exact).pow(2).sum().item()
                      - stats.variance() / stats.draws)
    v = torch.tensor(values)
    return v.mean().item(), v.std().item() / math.sqrt(runs)


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_gumbel_softmax_is_biased_and_the_bias_shrinks_with_temperature(latent):
    model = tiny_model(latent)
    x = all_images().repeat(10, 1, 1, 1)
    exact = exact_loss_gradient(model, all_images())
    torch.manual_seed(2)
    measured = {}
    for tau in (2.0, 1.0, 0.5, 0.25):
        measured[tau] = squared_bias(model, objective_for(estimator="gumbel-softmax",
                                                          temperature=tau), x, exact)
    reinforce = squared_bias(model, objective_for(estimator="score-function",
                                                  baseline="leave-one-out", samples=3),
                             x, exact)
    taus = sorted(measured, reverse=True)
    for hi, lo in itertools.pairwise(taus):
        (b_hi, se_hi), (b_lo, se_lo) = measured[hi], measured[lo]
        assert b_hi - b_lo > Z * math.hypot(se_hi, se_lo), \
            f"bias^2 at tau={hi}: {b_hi:.5f}±{se_hi:.5f}, at tau={lo}: {b_lo:.5f}±{se_lo:.5f}"
    b_min, se_min = measured[taus[-1]]
    assert b_min > Z * se_min  # still biased at the smallest temperature
    # REINFORCE's squared bias is zero within its standard error
    assert abs(reinforce[0]) < Z * reinforce[1] + 1e-12, reinforce


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_pathwise_on_a_discrete_family_names_the_alternatives(latent):
    model = tiny_model(latent)
    with pytest.raises(ConfigError, match=r"objective.estimator=pathwise.*score-function.*"
                                          r"gumbel-softmax.*straight-through"):
        check_estimator(ObjectiveConfig(estimator="pathwise"), model)
    check_estimator(ObjectiveConfig(estimator="score-function"), model)  # fine
    with pytest.raises(EstimatorError, match="score-function"):
        Pathwise().sample(model.encode(all_images()), 1)


def test_baseline_without_score_function_is_a_config_error():
    with pytest.raises(ConfigError, match=r"objective.baseline=nvil.*score-function"):
        objective_for(estimator="gumbel-softmax", baseline="nvil")
