"""objective.kl=relaxed: the Concrete relaxation's own KL (Maddison et al. 2017), checked
against a value known exactly, and its config rules."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from torch.distributions import Bernoulli, Independent
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from vaelab.api import fit
from vaelab.build import build_model, build_objective
from vaelab.config import Config, ConfigError, ModelConfig
from vaelab.inference.estimators import GumbelSoftmax, StraightThrough
from vaelab.inference.objectives import elbo
from vaelab.models.discrete import OneHot, from_log_space, relax, relax_in_log_space

EVENT = (1, 8, 8)


def bits(logits: torch.Tensor) -> Independent:
    return Independent(Bernoulli(logits=logits), 1)


def logistic_kl(a: float, b: float) -> float:
    """KL(Logistic(a, 1) || Logistic(b, 1)) by the trapezoid rule on a fine grid."""
    t = torch.linspace(-60.0, 60.0, 400_001, dtype=torch.float64)

    def log_density(loc: float) -> torch.Tensor:
        u = t - loc
        return -u - 2 * torch.nn.functional.softplus(-u)

    log_f, log_g = log_density(a), log_density(b)
    return torch.trapezoid(log_f.exp() * (log_f - log_g), t).item()


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_relaxed_bernoulli_kl_at_equal_temperatures_is_the_logistic_kl(tau):
    """With posterior and prior at one temperature, logit(y) * tau = a + L for L ~
    Logistic(0, 1), so log q(y) - log p(y) is the log density ratio of two unit logistics
    located at the logits a and b: its mean is KL(Logistic(a) || Logistic(b)) whatever tau
    (unlike the discrete KL, it grows without bound as |a - b| does)."""
    torch.manual_seed(0)
    a, b = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 0.0, 1.5])
    estimator = GumbelSoftmax(temperature=tau)
    _, kl = estimator.sample_with_relaxed_kl(bits(a), bits(b), 200_000)  # (K, 3) summed
    exact = sum(logistic_kl(float(x), float(y)) for x, y in zip(a, b, strict=True))
    stderr = kl.std().item() / math.sqrt(kl.numel())
    assert abs(kl.mean().item() - exact) < 4 * stderr, (kl.mean().item(), exact, stderr)


def test_relaxed_kl_is_zero_when_posterior_equals_prior():
    logits = torch.randn(4, 5, 3)
    q = Independent(OneHot(logits=logits), 1)
    for estimator in (GumbelSoftmax(0.5), StraightThrough(2.0)):
        _, kl = estimator.sample_with_relaxed_kl(q, q, 7)
        assert kl.shape == (7, 4)
        assert torch.equal(kl, torch.zeros_like(kl))


def test_relaxed_categorical_kl_is_the_mean_of_log_density_ratios():
    """The estimate is log q(y) - log p(y) summed over the N variables, at the y the
    returned z came from: recompute it from z with torch's densities."""
    torch.manual_seed(1)
    q = Independent(OneHot(logits=torch.randn(3, 4, 5)), 1)
    p = Independent(OneHot(logits=torch.zeros(4, 5)), 1)
    z, kl = GumbelSoftmax(0.7).sample_with_relaxed_kl(q, p, 2)
    y = z.log()
    expected = (ExpRelaxedCategorical(torch.tensor(0.7), logits=q.base_dist.logits).log_prob(y)
                - ExpRelaxedCategorical(torch.tensor(0.7), logits=torch.zeros(4, 5)).log_prob(y)
                ).sum(-1)
    torch.testing.assert_close(kl, expected, rtol=1e-4, atol=1e-4)
    torch.manual_seed(1)
    mean_kl = GumbelSoftmax(0.7).sample_with_relaxed_kl(q, p, 20_000)[1].mean(0)
    assert (mean_kl > 0).all()  # a KL between different distributions


@pytest.mark.parametrize("categorical", [False, True])
def test_samples_have_the_law_of_the_relaxation(categorical):
    """z from the log-space draw is distributed as relax(q)'s samples: equal means."""
    torch.manual_seed(2)
    logits = torch.randn(3, 4) if categorical else torch.randn(6)
    q = Independent(OneHot(logits=logits), 1) if categorical else bits(logits)
    n = 50_000
    z, _ = GumbelSoftmax(0.6).sample_with_relaxed_kl(q, q, n)
    reference = relax(q, 0.6).rsample((n,))
    diff = z.mean(0) - reference.mean(0)
    stderr = ((z.var(0) + reference.var(0)) / n).sqrt()
    assert (diff.abs() < 4.5 * stderr).all()
    y = relax_in_log_space(q, 0.6).rsample((3,))
    assert torch.equal(from_log_space(y, categorical), y.exp() if categorical else y.sigmoid())


def test_straight_through_forward_is_hard_with_the_relaxed_kl():
    q = bits(torch.randn(5, 9))
    z, kl = StraightThrough(0.5).sample_with_relaxed_kl(q, bits(torch.zeros(9)), 3)
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert kl.shape == (3, 5) and torch.isfinite(kl).all()


def test_prior_temperature_changes_only_the_prior_density():
    torch.manual_seed(3)
    q, p = bits(torch.randn(2, 4)), bits(torch.zeros(4))
    same = GumbelSoftmax(0.5)
    other = GumbelSoftmax(0.5, prior_temperature=2.0)
    torch.manual_seed(4)
    z1, kl1 = same.sample_with_relaxed_kl(q, p, 3)
    torch.manual_seed(4)
    z2, kl2 = other.sample_with_relaxed_kl(q, p, 3)
    torch.testing.assert_close(z1, z2)  # same posterior draw
    y = torch.logit(z1.double()).float()
    prior_gap = (relax_in_log_space(p, 2.0).log_prob(y) - relax_in_log_space(p, 0.5).log_prob(y))
    torch.testing.assert_close(kl1 - kl2, prior_gap, rtol=1e-3, atol=1e-3)


def model_cfg(**kw) -> ModelConfig:
    base = dict(latent="categorical", latent_dim=3, num_classes=4, hidden=[16])
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("setting, match", [
    (dict(estimator="score-function"), "objective.kl=relaxed is the KL of the Concrete"),
    (dict(free_bits=0.1), "objective.free_bits needs the closed-form KL"),
    (dict(prior_temperature=-1.0), "objective.prior_temperature=-1.0: must be a number >= 0"),
])
def test_bad_relaxed_kl_configs_name_the_fix(setting, match):
    cfg = Config()
    cfg.model = model_cfg()
    cfg.objective.kl = "relaxed"
    for key, value in setting.items():
        setattr(cfg.objective, key, value)
    with pytest.raises(ConfigError, match=re.escape(match)):
        build_objective(cfg.objective, EVENT, discrete=True)


def test_elbo_with_relaxed_kl_and_another_estimator_names_the_fix():
    cfg = Config()
    cfg.model = model_cfg()
    model = build_model(cfg.model, EVENT)
    with pytest.raises(ValueError, match=re.escape("kl='relaxed' needs a relaxed estimator")):
        elbo(model, torch.zeros(2, *EVENT), kl="relaxed")


def test_relaxed_kl_on_gaussian_latents_fails_clearly():
    cfg = Config()
    cfg.objective.kl = "relaxed"
    model = build_model(cfg.model, EVENT)
    with pytest.raises(ConfigError, match=re.escape("estimator=pathwise does not train")):
        build_objective(cfg.objective, EVENT, discrete=model.posterior.discrete)


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_fit_with_relaxed_kl_trains_relaxed_and_evaluates_discretely(tiny_npz, tmp_path,
                                                                     latent):
    cfg = Config()
    cfg.data.name = tiny_npz
    cfg.data.binarize = "none"
    cfg.model = model_cfg(latent=latent, latent_dim=6 if latent == "bernoulli" else 3)
    cfg.objective.kl = "relaxed"
    cfg.objective.temperature = 0.5
    cfg.objective.prior_temperature = 0.5
    cfg.train.epochs, cfg.train.batch_size, cfg.train.progress = 2, 50, False
    cfg.eval.iw_samples = 20
    run = fit(cfg, out=tmp_path / "run", pictures=False)
    history = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_bound"]) and math.isfinite(r["val_bound"])
               for r in history)
    summary = json.loads((run.path / "summary.json").read_text())
    audit = summary["objective_audit"]["latent"]
    assert "relaxed prior at temperature 0.5" in audit
    assert "evaluation: the discrete model" in audit
    test = summary["test"]
    # the discrete KL against the uniform prior, at most N log C (the relaxed one is not)
    assert test["kl"] <= (6 * math.log(2) if latent == "bernoulli" else 3 * math.log(4)) + 1e-6
    assert math.isfinite(test["elbo"]) and test["nll"] <= -test["elbo"] + 4 * test["elbo_stderr"]
