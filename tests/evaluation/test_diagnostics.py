"""Collapse diagnostics and the objective audit: KL per dimension against independent
computations, the collapse warning, the output-range check and the 2-D prior plot."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.evaluation.diagnostics import (
    collapse_warning,
    kl_per_dimension,
    output_range_check,
    prior_components,
)
from vaelab.evaluation.evaluate import elbo_terms, evaluate
from vaelab.viz.plots import NotApplicable, plot_latent_2d


def model_for(**kw):
    torch.manual_seed(0)
    base = dict(latent_dim=3, hidden=[16], likelihood="bernoulli")
    return build_model(ModelConfig(**{**base, **kw}), (6,), data_x=torch.rand(12, 6)).double()


X = torch.bernoulli(torch.rand(50, 6, generator=torch.Generator().manual_seed(1))).double()


def test_exact_kl_per_dimension_sums_to_the_total_kl():
    model = model_for()
    values, stderr, kind = kl_per_dimension(model, X)
    assert kind == "exact" and values.shape == (3,) and (stderr > 0).all()
    total = elbo_terms(model, X, kl="analytic")["kl"].mean()
    torch.testing.assert_close(values.sum(), total)


def test_marginal_kl_of_a_full_covariance_posterior():
    """KL between the 1-D marginals N(m_d, Sigma_dd) and N(0, 1); their sum is at most the
    total KL (the difference is q's total correlation, >= 0)."""
    model = model_for(latent="gaussian-full")
    values, _, kind = kl_per_dimension(model, X)
    q = model.encode(X)
    direct = kl_divergence(Normal(q.mean, q.variance.sqrt()), Normal(0.0, 1.0)).mean(0)
    assert kind == "marginal"
    torch.testing.assert_close(values, direct.detach())
    assert values.sum() <= elbo_terms(model, X, kl="analytic")["kl"].mean() + 1e-12


def test_marginal_monte_carlo_kl_matches_analytic_for_a_one_component_mixture():
    """A mixture with one component is a Gaussian: the Monte Carlo path (taken because a
    mixture has no closed form) must agree with the closed form within its error."""
    model = model_for(prior="mixture", prior_components=1)
    values, _, kind = kl_per_dimension(model, X, mc_samples=4000)
    comp = model.prior().component_distribution.base_dist
    q = model.encode(X).base_dist
    exact = kl_divergence(q, Normal(comp.loc[0], comp.scale[0])).mean(0).detach()
    assert kind == "marginal"
    # the noise is shared across datapoints, so bound the error by the per-sample spread
    assert ((values - exact).abs() < 4 * 2.0 / math.sqrt(4000)).all(), (values, exact)


def test_vamp_prior_kl_per_dimension_is_chunked_and_finite():
    model = model_for(prior="vamp", prior_components=5)
    values, _, kind = kl_per_dimension(model, X, mc_samples=8, budget=500)  # chunks of 4
    assert kind == "marginal" and torch.isfinite(values).all() and (values > -0.5).all()


def test_collapse_warning_threshold():
    assert collapse_warning(3, 10, 0.01) is not None
    assert "3 of 10" in collapse_warning(3, 10, 0.01)
    assert collapse_warning(5, 10, 0.01) is None  # exactly half inactive: no warning
    assert collapse_warning(10, 10, 0.01) is None


def test_evaluation_reports_collapse_and_kl_per_dimension():
    model = model_for()
    layer = model.encoder.net[-1]
    with torch.no_grad():  # a collapsed encoder: q(z|x) ignores x
        layer.weight.zero_()
    report = evaluate(model, X, iw_samples=5)
    assert report["active_units"] == 0
    assert len(report["kl_per_dim"]) == 3 and report["kl_per_dim_kind"] == "exact"
    assert len(report["warnings"]) == 1 and "posterior collapse" in report["warnings"][0]
    healthy = model_for()
    with torch.no_grad():  # a strongly x-dependent encoder: every unit active
        healthy.encoder.net[-1].weight.mul_(10)
    report = evaluate(healthy, X, iw_samples=5)
    assert report["active_units"] == 3 and report["warnings"] == []


@pytest.mark.parametrize("likelihood,data,is_8bit,binarized,status", [
    ("bernoulli", "binary", False, False, "ok"),
    ("bernoulli", "gray", True, True, "ok"),
    ("bernoulli", "gray", True, False, "warning"),
    ("bernoulli", "wide", False, False, "error"),
    ("continuous-bernoulli", "gray", False, False, "ok"),
    ("logistic-256", "gray", True, False, "ok"),
    ("logistic-256", "gray", False, False, "error"),
    ("gaussian", "gray", False, False, "warning"),
    ("gaussian", "wide", False, False, "ok"),
])
def test_output_range_check(likelihood, data, is_8bit, binarized, status):
    gen = torch.Generator().manual_seed(0)
    x = {"binary": torch.bernoulli(torch.rand(30, 6, generator=gen)),
         "gray": torch.randint(0, 256, (30, 6), generator=gen) / 255,
         "wide": 3 * torch.randn(30, 6, generator=gen)}[data]
    model = build_model(ModelConfig(likelihood=likelihood, hidden=[8], latent_dim=2), (6,))
    result = output_range_check(model, likelihood, x, is_8bit=is_8bit, binarized=binarized)
    assert result["status"] == status, result["note"]
    assert result["data_range"] == [round(x.min().item(), 6), round(x.max().item(), 6)]


def test_prior_components_and_the_2d_plot(tmp_path):
    model = model_for(latent_dim=2, prior="vamp", prior_components=4)
    weights, means, covs = prior_components(model.prior())
    assert weights.shape == (4,) and means.shape == (4, 2) and covs.shape == (4, 2, 2)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=weights.dtype))
    full = model_for(latent_dim=2, latent="gaussian-full", prior="mixture", prior_components=3)
    assert prior_components(full.prior())[2].shape == (3, 2, 2)
    path = plot_latent_2d(model, X, tmp_path / "latent.png", torch.arange(50) % 3)
    assert path is not None and path.stat().st_size > 1000
    with pytest.raises(NotApplicable, match="2-D latent"):  # a 3-D latent
        plot_latent_2d(model_for(), X, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
