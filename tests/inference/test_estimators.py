"""Score-function and pathwise gradients against exact values, with and without baselines.

Toy problem (the issue's): z ~ N(mu, sigma^2), f(z) = z^2, so d/dmu E[f] = 2 mu. One draw's
gradient w.r.t. mu has variance 4 sigma^2 (pathwise: 2z) and
mu^4/sigma^2 + 14 mu^2 + 15 sigma^2 (score function: z^2 (z - mu) / sigma^2); with a
constant baseline b it is c^2/sigma^2 + 4c + 8 mu^2 + 10 sigma^2, c = mu^2 + sigma^2 - b
(expand z = mu + sigma e and use E e^2 = 1, E e^4 = 3, E e^6 = 15).

Tolerances: means within Z standard errors (std/sqrt(N)); a sample variance s^2 within Z of
its standard error sqrt((m4 - s^4 (N-3)/(N-1)) / N), m4 the empirical fourth central
moment (the asymptotic variance of s^2 for any distribution with a finite fourth moment;
a chi-square interval would assume a Gaussian gradient, which the score function's is not).
Each draw is one element of a batch of N independent parameters, so N = 10^5 draws cost one
vectorised backward pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from vaelab.config import ConfigError
from vaelab.inference.baselines import NVIL, Baseline, LeaveOneOut, MovingAverage, build_baseline
from vaelab.inference.estimators import Pathwise, ScoreFunction

Z = 4.0
MU, SIGMA = 1.0, 0.5
N = 100_000


def se_of_mean(g: torch.Tensor) -> float:
    return g.std().item() / math.sqrt(g.numel())


def se_of_variance(g: torch.Tensor) -> float:
    n = g.numel()
    centred = g - g.mean()
    s2 = centred.pow(2).sum().item() / (n - 1)
    m4 = centred.pow(4).mean().item()
    return math.sqrt(max(m4 - s2**2 * (n - 3) / (n - 1), 0.0) / n)


def assert_close_se(estimate: float, exact: float, se: float, what: str) -> None:
    assert abs(estimate - exact) <= Z * se, \
        f"{what}: {estimate:.5f} vs exact {exact:.5f} (|diff| {abs(estimate - exact):.5f} " \
        f"> {Z} x stderr {se:.5f})"


def sf_variance(mu: float, sigma: float, b: float = 0.0) -> float:
    """Analytic variance of one score-function draw of d/dmu E[z^2] with constant b."""
    c = mu**2 + sigma**2 - b
    return c**2 / sigma**2 + 4 * c + 8 * mu**2 + 10 * sigma**2


def toy_gradients(estimator, n: int = N, k: int = 1, mu: float = MU, sigma: float = SIGMA,
                  seed: int = 0) -> torch.Tensor:
    """n independent draws of d/dmu of the K-sample estimate of E[z^2]: (n,)."""
    torch.manual_seed(seed)
    mu_t = torch.full((n,), mu, dtype=torch.double, requires_grad=True)
    q = Normal(mu_t, torch.full((n,), sigma, dtype=torch.double))
    z = estimator.sample(q, k)  # (K, n)
    f = z.pow(2)
    log_q = q.log_prob(z) if estimator.needs_log_q_gradient else None
    x = torch.zeros(n, 1, dtype=torch.double)  # a constant "datapoint" for nvil's b(x)
    surrogate = estimator.surrogate(f, log_q, x)  # (K, n), value f
    torch.testing.assert_close(surrogate.detach(), f.detach())  # the value stays the bound
    (grad,) = torch.autograd.grad(surrogate.mean(0).sum(), mu_t)
    return grad


def test_pathwise_mean_and_variance_match_analytic():
    g = toy_gradients(Pathwise())
    assert_close_se(g.mean().item(), 2 * MU, se_of_mean(g), "pathwise mean")
    assert_close_se(g.var().item(), 4 * SIGMA**2, se_of_variance(g), "pathwise variance")


def test_score_function_mean_and_variance_match_analytic():
    g = toy_gradients(ScoreFunction())
    assert_close_se(g.mean().item(), 2 * MU, se_of_mean(g), "score-function mean")
    exact_var = MU**4 / SIGMA**2 + 14 * MU**2 + 15 * SIGMA**2
    assert exact_var == sf_variance(MU, SIGMA, 0.0)
    assert_close_se(g.var().item(), exact_var, se_of_variance(g), "score-function variance")
    # the point in numbers: REINFORCE is far noisier than pathwise here (21.75 vs 1)
    assert g.var().item() > 10 * 4 * SIGMA**2


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (2.0, 0.3)])
def test_score_function_variance_formula_other_points(mu, sigma):
    g = toy_gradients(ScoreFunction(), mu=mu, sigma=sigma, seed=1)
    assert_close_se(g.mean().item(), 2 * mu, se_of_mean(g), "mean")
    assert_close_se(g.var().item(), sf_variance(mu, sigma), se_of_variance(g), "variance")


def warm_up(estimator: ScoreFunction, steps: int, lr: float = 0.05) -> None:
    """Train the baseline alone (its running means, and its parameters by Adam)."""
    estimator.train()
    params = list(estimator.parameters())
    opt = torch.optim.Adam(params, lr=lr) if params else None
    for step in range(steps):
        torch.manual_seed(100 + step)
        mu_t = torch.full((2000,), MU, dtype=torch.double, requires_grad=True)
        q = Normal(mu_t, torch.full((2000,), SIGMA, dtype=torch.double))
        z = estimator.sample(q, 1)
        s = estimator.surrogate(z.pow(2), q.log_prob(z), torch.zeros(2000, 1,
                                                                     dtype=torch.double))
        if opt is not None:
            opt.zero_grad()
            (-s.mean()).backward()
            opt.step()
    estimator.eval()


@pytest.mark.parametrize("kind", ["moving-average", "nvil"])
def test_constant_baselines_keep_the_mean_and_give_the_analytic_variance(kind):
    """A fitted (then frozen) baseline b: mean still 2 mu; variance equals the analytic
    c^2/sigma^2 + 4c + 8mu^2 + 10sigma^2 at the b it learned, below the no-baseline one."""
    baseline = MovingAverage(decay=0.9) if kind == "moving-average" \
        else NVIL((1,), hidden=4, decay=0.9).double()
    est = ScoreFunction(baseline)
    warm_up(est, 300 if kind == "nvil" else 50)
    b = baseline.value(torch.zeros(1, 1, dtype=torch.double),
                       torch.zeros(1, 1, dtype=torch.double)).reshape(-1)[0].item()
    assert abs(b - (MU**2 + SIGMA**2)) < 0.1, f"baseline learned b={b}, E f = 1.25"
    g = toy_gradients(est, seed=2)
    assert_close_se(g.mean().item(), 2 * MU, se_of_mean(g), f"{kind} mean")
    assert_close_se(g.var().item(), sf_variance(MU, SIGMA, b), se_of_variance(g),
                    f"{kind} variance")
    assert g.var().item() < 0.5 * sf_variance(MU, SIGMA)


def test_frozen_baseline_does_not_update_in_eval_mode():
    est = ScoreFunction(MovingAverage(0.9))
    warm_up(est, 5)
    before = est.baseline.mean.get().item()
    toy_gradients(est, n=1000, seed=3)
    assert est.baseline.mean.get().item() == before
    est.train()
    toy_gradients(est, n=1000, seed=3)
    assert est.baseline.mean.get().item() != before


def test_nvil_variance_normalisation_rescales_but_keeps_the_direction():
    baseline = NVIL((1,), hidden=4, normalize=True).double()
    est = ScoreFunction(baseline)
    warm_up(est, 300)
    scale = baseline.scale()
    assert scale > 1.0  # std of the centred signal here is about 1.5
    g = toy_gradients(est, seed=4)
    assert_close_se(g.mean().item() * scale, 2 * MU, se_of_mean(g) * scale, "normalised mean")


@pytest.mark.parametrize("k", [2, 5])
def test_leave_one_out_keeps_the_mean_and_reduces_variance(k):
    n = N // k
    plain = toy_gradients(ScoreFunction(), n=n, k=k, seed=5)
    loo = toy_gradients(ScoreFunction(LeaveOneOut(k)), n=n, k=k, seed=6)
    pathwise = toy_gradients(Pathwise(), n=n, k=k, seed=7)
    assert_close_se(plain.mean().item(), 2 * MU, se_of_mean(plain), "no baseline mean")
    assert_close_se(loo.mean().item(), 2 * MU, se_of_mean(loo), "leave-one-out mean")
    # the plain K-sample average has variance (one draw's) / K exactly
    assert_close_se(plain.var().item(), sf_variance(MU, SIGMA) / k, se_of_variance(plain),
                    "K-sample variance")
    assert_close_se(pathwise.var().item(), 4 * SIGMA**2 / k, se_of_variance(pathwise),
                    "K-sample pathwise variance")
    gap = plain.var().item() - loo.var().item()
    assert gap > Z * math.hypot(se_of_variance(plain), se_of_variance(loo))


def test_leave_one_out_needs_two_samples():
    with pytest.raises(ConfigError, match=r"objective.samples"):
        LeaveOneOut(1)
    with pytest.raises(ConfigError, match=r"objective.samples"):
        build_baseline("leave-one-out", samples=1, event_shape=None)


def test_leave_one_out_value_is_the_mean_of_the_others():
    f = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])  # (K=3, B=2)
    b = LeaveOneOut(3).value(None, f)
    torch.testing.assert_close(b, torch.tensor([[4.0, 40.0], [3.5, 35.0], [1.5, 15.0]]))


def test_no_baseline_is_zero_and_unknown_baseline_is_a_config_error():
    assert Baseline().value(None, torch.ones(2, 3)).item() == 0.0
    with pytest.raises(ConfigError, match=r"objective.baseline='nope'.*moving-average"):
        build_baseline("nope", samples=1, event_shape=None)
