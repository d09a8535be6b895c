"""ELBO and IWAE gradients of every estimator/baseline against exact or independent values.

The linear-Gaussian model (tests/linear_gaussian.py) has a closed-form ELBO for a diagonal
Gaussian encoder; written here with the model's live decoder weights, autograd gives the
exact gradient w.r.t. encoder *and* decoder. Each gradient draw averages R copies of a few
datapoints, so per-coordinate means are near-Gaussian; every coordinate must lie within
ZMAX standard errors (about 40 coordinates, so ZMAX = 4.5 keeps false alarms near 1e-4).
"""

from __future__ import annotations

import math

import pytest
import torch

from linear_gaussian import LinearGaussian
from vaelab.build import build_objective
from vaelab.config import ObjectiveConfig
from vaelab.evaluation.gradients import draw_gradients, fit_baseline, measure, parameter_groups
from vaelab.schedules import Progress

ZMAX = 4.5
COPIES = 50  # R: copies of each datapoint in one draw's batch
DRAWS = 200


@pytest.fixture(scope="module")
def lg():
    lg = LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=0)
    lg.set_encoder_to_diagonal_of_exact(widen=1.5, shift=0.3)  # a q with sizeable gradients
    return lg


def exact_elbo_live(lg: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    """Closed-form ELBO per datapoint, differentiable in encoder and decoder parameters."""
    q = lg.model.encode(x)
    m, v = q.mean, q.variance
    lin = lg.model.decoder.output_layer
    w, b = lin.weight, lin.bias
    resid = x - m @ w.T - b
    trace = (v * (w**2).sum(0)).sum(-1)
    rec = -0.5 * lg.D * math.log(2 * math.pi * lg.s**2) \
        - (resid.pow(2).sum(-1) + trace) / (2 * lg.s**2)
    kl = 0.5 * (v.sum(-1) + m.pow(2).sum(-1) - lg.d - v.log().sum(-1))
    return rec - kl


def exact_loss_gradient(lg: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    groups = parameter_groups(lg.model)
    params = [p for g in ("encoder", "decoder") for p in groups[g]]
    grads = torch.autograd.grad(-exact_elbo_live(lg, x).mean(), params)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def assert_unbiased(stats, exact: torch.Tensor, what: str) -> None:
    se = (stats.var / stats.draws).sqrt()
    diff = stats.mean - exact
    zero_var = se == 0
    assert diff[zero_var].abs().max().item() if zero_var.any() else 0.0 < 1e-9
    z = (diff[~zero_var] / se[~zero_var]).abs()
    assert z.max().item() < ZMAX, f"{what}: max |z| = {z.max().item():.2f} over {z.numel()} " \
                                  f"coordinates (mean |z| {z.mean().item():.2f})"


def make_objective(lg, **kw):
    objective = build_objective(ObjectiveConfig(**kw), event_shape=(lg.D,)).double()
    return objective


CASES = [
    dict(estimator="pathwise", kl="analytic"),
    dict(estimator="pathwise", kl="mc"),
    dict(estimator="score-function", kl="analytic"),
    dict(estimator="score-function", kl="mc"),
    dict(estimator="score-function", kl="analytic", baseline="moving-average"),
    dict(estimator="score-function", kl="mc", baseline="nvil", baseline_hidden=8),
    dict(estimator="score-function", kl="analytic", baseline="leave-one-out", samples=3),
    dict(estimator="score-function", kl="mc", baseline="leave-one-out", samples=3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_elbo_gradient_is_unbiased_against_closed_form(lg, case):
    x = lg.sample_x(4, seed=11)
    xr = x.repeat(COPIES, 1)
    objective = make_objective(lg, **case)
    torch.manual_seed(12)
    fit_baseline(lg.model, objective, xr, steps=150, lr=0.01)
    stats = measure(lg.model, objective, xr, DRAWS, name=str(case))
    assert_unbiased(stats, exact_loss_gradient(lg, x), str(case))


def test_score_function_keeps_the_logged_value_the_true_bound(lg):
    """The surrogate (and the baseline's zero-valued loss) leave loss = -bound exactly."""
    x = lg.sample_x(8, seed=13)
    for case in CASES[2:]:
        objective = make_objective(lg, **case)
        objective.train()
        torch.manual_seed(14)
        out = objective(lg.model, x, Progress(0, 0.0))
        torch.testing.assert_close(out.loss, -out.bound.mean(), rtol=1e-10, atol=1e-10)


def test_score_function_decoder_gradient_matches_pathwise_variance(lg):
    """Both estimators give the decoder the same per-sample gradient grad_theta log p(x|z)
    with z ~ q, so its variance agrees; the encoder's is far larger for REINFORCE."""
    x = lg.sample_x(4, seed=15).repeat(10, 1)
    torch.manual_seed(16)
    pw = measure(lg.model, make_objective(lg, estimator="pathwise"), x, 300)
    sf = measure(lg.model, make_objective(lg, estimator="score-function"), x, 300)
    ratio = sf.variance("decoder") / pw.variance("decoder")
    # each trace is a sum of 15 sample variances over 300 draws (relative stderr about
    # sqrt(2/300) each, partly averaged out): a ratio within 30% of 1 is ample
    assert 0.7 < ratio < 1.43, ratio
    assert sf.variance("encoder") > 5 * pw.variance("encoder")


@pytest.mark.parametrize("baseline", ["none", "moving-average", "leave-one-out"])
def test_iwae_score_function_matches_pathwise_iwae(lg, baseline):
    """IWAE (K=3): the score-function gradient (VIMCO's leave-one-out signal with
    baseline=leave-one-out) has the same mean as the pathwise IWAE gradient."""
    x = lg.sample_x(4, seed=17).repeat(COPIES, 1)
    pathwise = make_objective(lg, name="iwae", samples=3, estimator="pathwise")
    sf = make_objective(lg, name="iwae", samples=3, estimator="score-function",
                        baseline=baseline)
    torch.manual_seed(18)
    fit_baseline(lg.model, sf, x, steps=100)
    ref = measure(lg.model, pathwise, x, 250)
    got = measure(lg.model, sf, x, 250)
    se = (got.var / got.draws + ref.var / ref.draws).sqrt()
    z = ((got.mean - ref.mean) / se).abs()
    assert z.max().item() < ZMAX, f"max |z| {z.max().item():.2f}"


def test_vimco_reduces_iwae_variance(lg):
    x = lg.sample_x(4, seed=19).repeat(10, 1)
    torch.manual_seed(20)
    plain = measure(lg.model, make_objective(lg, name="iwae", samples=4,
                                             estimator="score-function"), x, 300)
    vimco = measure(lg.model, make_objective(lg, name="iwae", samples=4,
                                             estimator="score-function",
                                             baseline="leave-one-out"), x, 300)
    assert vimco.variance("encoder") < 0.5 * plain.variance("encoder")


def test_draw_gradients_welford_matches_stacked_draws():
    """The streaming mean/variance equal those of the stacked gradients."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.double))
    v = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.double))
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(50, 3, generator=gen, dtype=torch.double)
    it = iter(noise)

    def loss():
        e = next(it)
        return (w * e[:2]).sum() + (v * e[2:]).sum() * 3

    stats = draw_gradients(loss, {"encoder": [w], "decoder": [v]}, 50)
    stacked = torch.cat([noise[:, :2], 3 * noise[:, 2:]], 1)
    torch.testing.assert_close(stats.mean, stacked.mean(0))
    torch.testing.assert_close(stats.var, stacked.var(0))
    assert stats.variance("decoder") == pytest.approx(stacked[:, 2].var().item())
    assert stats.variance() == pytest.approx(stacked.var(0).sum().item())


@pytest.mark.parametrize("bias", [0.0, 1.0])
def test_squared_bias_estimate_is_unbiased_under_correlated_heavy_tailed_noise(bias):
    """Gradients g = mu + bias + t_3 noise shared by all coordinates (perfectly correlated,
    heavy-tailed) against an unbiased reference: the group U-statistic recovers
    ||bias||^2 = P bias^2 within its jackknife standard error, where subtracting a
    per-coordinate noise floor would not be trustworthy. (Checked over 300 seeds at
    bias 0.6: mean estimate 7.33 ± 0.14 for the exact 7.2, 1.3% of |z| above 3.)"""
    p_dim = 20
    mu = torch.linspace(-1, 1, p_dim, dtype=torch.double)
    w = torch.nn.Parameter(torch.zeros(p_dim, dtype=torch.double))
    t3 = torch.distributions.StudentT(3.0)

    def loss_with(shift):
        def loss():
            e = t3.sample((1,)).double()
            return (w * (mu + shift + e * torch.ones(p_dim, dtype=torch.double))).sum()
        return loss

    torch.manual_seed(int(bias * 10) + 1)
    groups = {"encoder": [w], "decoder": []}
    ref = draw_gradients(loss_with(0.0), groups, 1000, batches=10)
    got = draw_gradients(loss_with(bias), groups, 400, batches=10)
    b = got.bias_against(ref)
    exact = p_dim * bias**2
    assert abs(b["squared_bias"] - exact) < 4 * b["squared_bias_se"], b
    assert b["bias_significant"] == (bias > 0), b


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_baselines_reduce_the_elbo_encoder_variance(lg, kl):
    """On the linear-Gaussian ELBO every baseline lowers REINFORCE's encoder variance
    (leave-one-out compared with no baseline at the same K = 3). Sample variances over 300
    draws of a sum of 24 coordinates: a factor-of-0.8 margin is many standard errors."""
    x = lg.sample_x(4, seed=21).repeat(10, 1)

    def encoder_variance(**kw):
        objective = make_objective(lg, estimator="score-function", kl=kl, **kw)
        torch.manual_seed(22)
        fit_baseline(lg.model, objective, x, steps=150, lr=0.01)
        return measure(lg.model, objective, x, 300).variance("encoder")

    plain = encoder_variance()
    for baseline in ("moving-average", "nvil"):
        assert encoder_variance(baseline=baseline, baseline_hidden=8) < 0.8 * plain, baseline
    assert encoder_variance(baseline="leave-one-out", samples=3) \
        < 0.8 * encoder_variance(samples=3)
