"""The bounds and the log-likelihood estimator against exact values (linear-Gaussian model).

Tolerances are z-scores on Monte Carlo standard errors with fixed seeds: a test fails when
the estimate is more than 4 standard errors from the exact value.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from linear_gaussian import LinearGaussian
from vaelab.evaluation.evaluate import elbo_terms, importance_log_likelihood
from vaelab.inference.objectives import elbo, iwae
from vaelab.models.kl import NoClosedFormKL, kl_term
from vaelab.models.priors import MixtureOfGaussians, StandardNormal

Z = 4.0  # allowed standard errors


def within(estimate: torch.Tensor, exact: torch.Tensor, stderr: float, slack: float = 0.0):
    diff = (estimate - exact).abs().item()
    assert diff <= Z * stderr + slack, f"|{estimate.item():.5f} - {exact.item():.5f}| = " \
                                       f"{diff:.5f} > {Z} x {stderr:.5f} + {slack}"


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=0)


def test_importance_weights_are_unbiased_for_p_x(lg):
    """mean_k w_k estimates p(x) without bias: E[p_hat / p] = 1 (a shifted, wider proposal
    keeps the weights bounded, so their standard error is trustworthy)."""
    lg.set_encoder_to_diagonal_of_exact(widen=1.5, shift=0.3)
    x = lg.sample_x(1)
    exact = lg.exact_log_px(x)
    torch.manual_seed(2)
    estimates = torch.stack([importance_log_likelihood(lg.model, x, samples=20)
                             for _ in range(400)]).squeeze(-1)
    ratio = torch.exp(estimates - exact)
    within(ratio.mean(), torch.tensor(1.0), ratio.std().item() / math.sqrt(ratio.numel()))


def test_is_log_likelihood_matches_exact_within_stderr(lg):
    lg.set_encoder_to_diagonal_of_exact()
    x = lg.sample_x(200, seed=3)
    torch.manual_seed(4)
    estimate = importance_log_likelihood(lg.model, x, samples=2000, sample_chunk=500)
    diff = estimate - lg.exact_log_px(x)
    # per-point differences: mean within its standard error of 0; each point is close too
    within(diff.mean(), torch.tensor(0.0), diff.std().item() / math.sqrt(diff.numel()))
    assert diff.abs().max() < 0.02


def test_elbo_estimate_matches_closed_form_and_gap_is_kl_to_posterior(lg):
    """MC ELBO = closed-form ELBO within its standard error, and the closed-form gap
    log p(x) - ELBO equals KL(q(z|x) || p(z|x)) exactly (a diagonal q leaves a gap)."""
    lg.set_encoder_to_diagonal_of_exact()
    x = lg.sample_x(50, seed=5)
    torch.manual_seed(6)
    k = 4000
    terms = elbo_terms(lg.model, x, samples=k)
    exact_elbo = lg.exact_elbo(x).detach()
    q = lg.model.encode(x)
    mc_std = lg.model.decode(q.sample((k,))).log_prob(x).std(0).detach() / math.sqrt(k)
    err = (terms["elbo"] - exact_elbo).abs()
    assert (err <= Z * mc_std).all(), f"max |MC - exact| {err.max():.4g}"
    true_post = MultivariateNormal(lg.posterior_mean(x), covariance_matrix=lg.S)
    q_full = MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
    gap = lg.exact_log_px(x) - exact_elbo
    torch.testing.assert_close(gap, kl_divergence(q_full, true_post).detach(), rtol=1e-6,
                               atol=1e-9)
    assert (gap > 1e-4).all()


def test_iwae_bound_increases_with_k_and_stays_below_log_px():
    lg = LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=1)  # random encoder
    x = lg.sample_x(100, seed=7)
    exact = lg.exact_log_px(x).mean()
    torch.manual_seed(8)
    means, errs = [], []
    for k in (1, 5, 50):
        reps = torch.stack([iwae(lg.model, x, samples=k).bound for _ in range(30)])  # (R, N)
        per_rep = reps.mean(1)
        means.append(per_rep.mean())
        errs.append(per_rep.std().item() / math.sqrt(per_rep.numel()))
    for (a, ea), (b, eb) in itertools.pairwise(zip(means, errs, strict=True)):
        assert b - a > Z * math.hypot(ea, eb), f"bound did not increase: {a:.3f} -> {b:.3f}"
    assert means[-1] < exact + Z * errs[-1]


def test_iwae_with_one_sample_equals_the_elbo(lg):
    x = lg.sample_x(64, seed=9)
    torch.manual_seed(10)
    a = iwae(lg.model, x, samples=1).bound
    torch.manual_seed(10)
    b = elbo(lg.model, x, samples=1, kl="mc").bound
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: (Independent(Normal(torch.randn(64, 3), torch.rand(64, 3) + 0.3), 1),
             StandardNormal(3)()),
    lambda: (Independent(Normal(torch.randn(64, 3), torch.rand(64, 3) + 0.3), 1),
             Independent(Normal(torch.randn(3), torch.rand(3) + 0.5), 1)),
], ids=["diag-vs-standard", "diag-vs-diag"])
def test_analytic_kl_matches_monte_carlo(make):
    torch.manual_seed(11)
    q, p = make()
    z = q.sample((20000,))
    samples = q.log_prob(z) - p.log_prob(z)  # (S, B)
    analytic = kl_term(q, p, mode="analytic")
    mc = samples.mean(0)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((analytic - mc).abs() <= Z * stderr).all()
    torch.testing.assert_close(kl_term(q, p, z=z, mode="mc"), mc)


def test_auto_kl_falls_back_to_monte_carlo_for_a_mixture_prior():
    torch.manual_seed(12)
    q = Independent(Normal(torch.randn(8, 2), torch.ones(8, 2)), 1)
    p = MixtureOfGaussians(2, 3)()
    z = q.sample((5,))
    with pytest.raises(NoClosedFormKL, match="objective.kl=mc"):
        kl_term(q, p, mode="analytic")
    torch.testing.assert_close(kl_term(q, p, z=z, mode="auto"),
                               (q.log_prob(z) - p.log_prob(z)).mean(0))
