"""A two-layer linear-Gaussian hierarchy, where log p(x) and the posterior are closed form.

    z_2 ~ N(0, 1),  z_1 | z_2 ~ N(A z_2 + a, diag(s1^2)),  x | z_1 ~ N(B z_1 + b, s^2 I)

so p(x) = N(B a + b, B (A A^T + diag(s1^2)) B^T + s^2 I). B has orthogonal columns, so
p(z_1 | z_2, x) has a diagonal precision diag(s1^-2) + B^T B / s^2: the top-down ladder q
with linear networks contains the exact posterior (z_2 is 1-D, so p(z_2|x) is too). The
bottom-up q(z_1|x) is diagonal while p(z_1|x) is correlated through z_2: its ELBO stays below
log p(x) by at least KL = (sum_i log P_ii - log det P) / 2, P the precision of p(z_1|x)
(the best diagonal q has precision diag(P)); q(z_2|z_1) can be exact (x is independent of
z_2 given z_1), so this is the bottom-up gap's minimum.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.evaluation.evaluate import evaluate, importance_log_likelihood
from vaelab.inference.layered import layered_elbo, log_weights
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.latents import inverse_positive

D, D1, D2 = 4, 2, 1
S_CONFIG, S1 = 1.0, 0.3  # std of x | z_1 (as configured) and of z_1 | z_2
S = S_CONFIG  # the fixed likelihood std is exactly the configured one
A = torch.tensor([[1.5], [1.5]], dtype=torch.double)  # (D1, D2): correlates z_1's units
a = torch.tensor([0.3, -0.2], dtype=torch.double)
b = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.double)


def _b_matrix() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.double))
    return q[:, :D1] * torch.tensor([1.2, 0.8], dtype=torch.double)  # orthogonal columns


B = _b_matrix()


def marginal() -> MultivariateNormal:
    cov_z1 = A @ A.T + S1**2 * torch.eye(D1, dtype=torch.double)
    cov = B @ cov_z1 @ B.T + S**2 * torch.eye(D, dtype=torch.double)
    return MultivariateNormal(B @ a + b, covariance_matrix=cov)


def min_bottom_up_gap() -> float:
    """KL from the best diagonal q(z_1|x) to p(z_1|x) (the same for every x)."""
    cov_z1 = A @ A.T + S1**2 * torch.eye(D1, dtype=torch.double)
    precision = torch.linalg.inv(cov_z1) + B.T @ B / S**2
    return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()


def hierarchy(inference: str, seed: int = 0) -> HierarchicalVAE:
    """The model with its generative part set to (A, a, B, b) and frozen; linear q nets."""
    cfg = ModelConfig(latent_layers=[D1, D2], inference=inference, hidden=[], layer_hidden=[],
                      likelihood="gaussian", likelihood_std=S_CONFIG, likelihood_variance="fixed")
    torch.manual_seed(seed)
    model = build_model(cfg, (D,)).double()
    down = model.down[0].net[-1]
    with torch.no_grad():
        model.decoder.output_layer.weight.copy_(B)
        model.decoder.output_layer.bias.copy_(b)
        down.weight.zero_()
        down.weight[:D1] = A
        down.bias[:D1] = a
        down.bias[D1:] = inverse_positive(S1)
    for module in (model.decoder, model.down, model.likelihood):
        module.requires_grad_(False)
    return model


def fit(model: HierarchicalVAE, x: torch.Tensor, samples: int = 8) -> None:
    """Black-box VI of the amortized q, the generative model fixed: L-BFGS on the ELBO with
    the noise held fixed (a sample-average objective, deterministic, so L-BFGS converges
    in well under a second where Adam on fresh noise needs thousands of steps)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=200, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            loss = layered_elbo(model, x, samples=samples).loss
        loss.backward()
        return loss

    opt.step(closure)


def set_exact_top_down(model: HierarchicalVAE) -> None:
    """The ladder q at the true posterior, in closed form: mu_hat_1 = D^-1 B^T (x - b) / s^2,
    sigma_hat_1^2 = D^-1 (D = B^T B / s^2, diagonal), and q(z_2|x) = p(z_2|x), whose mean
    is linear in mu_hat_1 (by Woodbury, B^T C^-1 = s^-2 s1^-2 (s1^-2 + D)^-1 B^T)."""
    dd = (B.T @ B).diagonal() / S**2
    enc, up = model.encoder.net[-1], model.up[0][-1]
    cov_x = S1**2 * B @ B.T + S**2 * torch.eye(D, dtype=torch.double)  # of x given z_2
    var = 1 / (1 + (A.T @ B.T @ torch.linalg.solve(cov_x, B @ A)).item())
    gain = var * A.T * (S1**-2 / (S1**-2 + dd))  # (1, D1): d mean(z_2|x) / d (B^T (x-b) / s^2)
    with torch.no_grad():
        for layer in (enc, up):
            layer.weight.zero_()
            layer.bias.zero_()
        enc.weight[:D1] = B.T / (dd[:, None] * S**2)
        enc.bias[:D1] = -(B.T @ b) / (dd * S**2)
        enc.bias[D1:] = torch.tensor([inverse_positive(v) for v in dd.rsqrt().tolist()])
        up.weight[0, :D1] = (gain * dd)[0]
        up.bias[0] = -(gain * dd) @ a
        up.bias[1] = inverse_positive(math.sqrt(var))


def gap(model: HierarchicalVAE, x: torch.Tensor, exact: torch.Tensor
        ) -> tuple[float, float]:
    """mean over x of log p(x) - ELBO(x) (ELBO from 400 draws each) and its standard error."""
    with torch.no_grad():
        diff = exact - layered_elbo(model, x, samples=400).bound
    return diff.mean().item(), diff.std().item() / math.sqrt(diff.numel())


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = marginal().sample((300,))
    return x, marginal().log_prob(x)


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, HierarchicalVAE]:
    x, _ = data
    models = {}
    for inference in ("top-down", "bottom-up"):
        torch.manual_seed(2)
        models[inference] = hierarchy(inference)
        fit(models[inference], x)
    return models


def test_bottom_up_gap_is_large_enough_to_measure():
    """The setting itself: diagonal bottom-up inference must lose a clear amount."""
    assert min_bottom_up_gap() > 0.2


def test_top_down_reaches_the_exact_log_likelihood(data, fitted):
    """ELBO of the fitted top-down (ladder) q within 0.05 nats of log p(x), per point.

    The gap's standard error over the 300 points is ~1e-3, so 0.05 is 50 of them: the bound
    is met by the fit, not by noise; and the ELBO must not exceed log p(x) beyond 3 SE."""
    x, exact = data
    mean, se = gap(fitted["top-down"], x, exact)
    assert -3 * se < mean < 0.05, (mean, se)


def test_bottom_up_stays_below(data, fitted):
    """The diagonal bottom-up ELBO is at least the best diagonal q's gap (up to 3 SE) below
    log p(x), and measurably worse than top-down: gap - 3 SE above 0.05 nats."""
    x, exact = data
    mean, se = gap(fitted["bottom-up"], x, exact)
    assert mean > min_bottom_up_gap() - 3 * se, (mean, se, min_bottom_up_gap())
    assert mean - 3 * se > 0.05, (mean, se)


def test_log_weights_at_the_exact_posterior_equal_log_px(data):
    """With q the true posterior every importance weight is p(x): log w = log p(x) for every
    draw (to 1e-6; a wrong term moves log w by O(1) nats). Checks every layer's densities."""
    x, exact = data
    model = hierarchy("top-down")
    set_exact_top_down(model)
    with torch.no_grad():
        log_w = log_weights(model.trace(x, 50))[0]  # (50, N)
    torch.testing.assert_close(log_w, exact.expand_as(log_w), rtol=0, atol=1e-6)


def test_importance_sampled_log_likelihood_matches_exact(data, fitted):
    """vaelab's IS estimate (K=500, chunked over draws and points) with a deliberately
    widened, shifted top-down q, minus the exact log p(x), per point: its mean is within 3
    standard errors of 0 (the IS bias, about Var(log w) / 2K, is below one SE here)."""
    x, exact = data
    model = copy.deepcopy(fitted["top-down"])
    with torch.no_grad():
        model.encoder.net[-1].bias[D1:] += 0.7  # wider q(z_1|z_2, x) factor
        model.up[0][-1].bias += torch.tensor([0.3, 0.7], dtype=torch.double)  # q(z_2|x)
    torch.manual_seed(3)
    ll = importance_log_likelihood(model, x, samples=500, batch_size=64, sample_chunk=128)
    diff = ll - exact
    se = diff.std().item() / math.sqrt(diff.numel())
    assert abs(diff.mean().item()) < 3 * se, (diff.mean().item(), se)
    assert 1e-4 < se < 0.01  # the proposal is off: per-point IS noise is real but small
    elbo = layered_elbo(model, x, samples=100).bound
    assert (exact - elbo).mean() > 0.1  # ... and IS recovers what the ELBO of this q loses


def test_evaluate_report_over_the_joint_latent(data, fitted):
    """evaluate() reports log p(x) with a standard error, and the KL split over the layers
    sums to the total KL."""
    x, exact = data
    torch.manual_seed(4)
    report = evaluate(fitted["top-down"], x, iw_samples=200, batch_size=50, sample_chunk=100)
    ref = exact.mean().item()
    assert abs(report["log_likelihood"] - ref) < 0.01
    assert report["log_likelihood_stderr"] > 0
    assert report["latent_layers"] == [D1, D2]
    assert sum(report["kl_per_layer"]) == pytest.approx(report["kl"], abs=1e-5)
    assert report["elbo"] <= ref + 0.01
