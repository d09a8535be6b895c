"""Priors and posteriors against independent computations.

* closed-form KLs between full-covariance and diagonal Gaussians: against torch's full-vs-full
  KL (exact) and a Monte Carlo mean (within 4 standard errors);
* Monte Carlo KL to a mixture / VampPrior on a 1-D latent: against scipy quadrature, with the
  prior's density enumerated component by component with scipy.stats;
* a full-covariance q trained by gradient steps on the linear-Gaussian model reaches the exact
  log p(x); a diagonal q stops at the smallest gap a diagonal can have, which is computed in
  closed form;
* the VampPrior shares the encoder without duplicating it in state_dict;
* bad prior/posterior combinations raise ConfigError.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp
from torch import nn
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from linear_gaussian import LinearGaussian
from vaelab.build import build_model
from vaelab.config import ConfigError, ModelConfig
from vaelab.inference.objectives import elbo, iwae
from vaelab.models.kl import has_analytic_kl, kl_term
from vaelab.models.latents import DiagonalGaussian, FullCovarianceGaussian
from vaelab.models.priors import MixtureOfGaussians, StandardNormal, VampPrior

Z = 4.0  # allowed standard errors
D64 = torch.float64



def random_tril(b: int, d: int, gen: torch.Generator) -> torch.Tensor:
    tril = torch.randn(b, d, d, generator=gen, dtype=D64).tril(-1) * 0.6
    return tril + torch.diag_embed(torch.rand(b, d, generator=gen, dtype=D64) + 0.3)


def diag_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return Independent(Normal(loc, scale), 1)


def as_full(p: Independent) -> MultivariateNormal:
    return MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))


def _full_vs_standard(gen):
    q = MultivariateNormal(torch.randn(16, 3, generator=gen, dtype=D64),
                           scale_tril=random_tril(16, 3, gen))
    return q, StandardNormal(3).double()()


def _full_vs_diag(gen):
    q = MultivariateNormal(torch.randn(16, 3, generator=gen, dtype=D64),
                           scale_tril=random_tril(16, 3, gen))
    p = diag_normal(torch.randn(3, generator=gen, dtype=D64),
                    torch.rand(3, generator=gen, dtype=D64) + 0.5)
    return q, p


def _diag_vs_full(gen):
    q = diag_normal(torch.randn(16, 3, generator=gen, dtype=D64),
                    torch.rand(16, 3, generator=gen, dtype=D64) + 0.3)
    p = MultivariateNormal(torch.randn(3, generator=gen, dtype=D64),
                           scale_tril=random_tril(1, 3, gen)[0])
    return q, p


def _exact(q, p) -> torch.Tensor:
    """The same KL through torch's own MultivariateNormal-vs-MultivariateNormal formula."""
    q_full = q if isinstance(q, MultivariateNormal) else as_full(q)
    p_full = p if isinstance(p, MultivariateNormal) else as_full(p)
    return kl_divergence(q_full, p_full)


@pytest.mark.parametrize("make", [_full_vs_standard, _full_vs_diag, _diag_vs_full],
                         ids=["full-vs-standard", "full-vs-diag", "diag-vs-full"])
def test_full_covariance_kl_closed_forms(make):
    gen = torch.Generator().manual_seed(0)
    q, p = make(gen)
    analytic = kl_term(q, p, mode="analytic")
    assert analytic.shape == (16,)
    torch.testing.assert_close(analytic, _exact(q, p), rtol=1e-10, atol=1e-12)
    torch.manual_seed(1)
    z = q.sample((20000,))
    samples = q.log_prob(z) - p.log_prob(z)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((analytic - samples.mean(0)).abs() <= Z * stderr).all()


def test_standard_normal_prior_kl_uses_its_closed_form_and_equals_torchs():
    """The standard-normal prior's own KL (kl.UnitNormal) against torch's Normal-Normal KL
    (exact, float64, gradients too) and a Monte Carlo mean (within Z standard errors)."""
    gen = torch.Generator().manual_seed(2)
    loc = torch.randn(16, 5, generator=gen, dtype=D64).requires_grad_()
    scale = (torch.rand(16, 5, generator=gen, dtype=D64) * 2 + 0.05).requires_grad_()
    q = Independent(Normal(loc, scale), 1)
    prior = StandardNormal(5).double()()
    assert type(prior.base_dist).__name__ == "UnitNormal"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the registry finds one most specific closed form
        ours = kl_term(q, prior, mode="analytic")
    reference = kl_divergence(q, Independent(Normal(torch.zeros(5, dtype=D64),
                                                    torch.ones(5, dtype=D64)), 1))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(ours.sum(), (loc, scale))
    for ours_g, ref_g in zip(grads, torch.autograd.grad(reference.sum(), (loc, scale)),
                             strict=True):
        torch.testing.assert_close(ours_g, ref_g, rtol=1e-12, atol=1e-12)
    torch.manual_seed(3)
    z = q.sample((20000,))
    samples = (q.log_prob(z) - prior.log_prob(z)).detach()
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((ours.detach() - samples.mean(0)).abs() <= Z * stderr).all()
    # a prior with more batch dimensions than q broadcasts like torch's KL
    wide = Independent(type(prior.base_dist)(torch.zeros(3, 1, 5, dtype=D64),
                                             torch.ones(3, 1, 5, dtype=D64)), 1)
    assert kl_term(q, wide, mode="analytic").shape == (3, 16)


def test_full_covariance_kl_is_zero_between_equal_distributions():
    q = MultivariateNormal(torch.zeros(4, 2, dtype=D64),
                           scale_tril=torch.eye(2, dtype=D64).expand(4, 2, 2))
    torch.testing.assert_close(kl_term(q, StandardNormal(2).double()(), mode="analytic"),
                               torch.zeros(4, dtype=D64))


def test_non_gaussian_factorized_prior_falls_back_to_monte_carlo():
    q = MultivariateNormal(torch.zeros(3, 2), scale_tril=torch.eye(2).expand(3, 2, 2))
    p = Independent(Laplace(torch.zeros(2), torch.ones(2)), 1)
    assert not has_analytic_kl(q, p)
    z = q.sample((7,))
    torch.testing.assert_close(kl_term(q, p, z=z), (q.log_prob(z) - p.log_prob(z)).mean(0))


# -- Monte Carlo KL to mixtures, against quadrature -------------------------------------------

def quad_kl(q_loc: float, q_scale: float, log_p) -> float:
    """KL(N(q_loc, q_scale^2) || p) by adaptive quadrature over +-12 q-standard deviations."""
    def integrand(z: float) -> float:
        log_q = -0.5 * ((z - q_loc) / q_scale) ** 2 - math.log(q_scale * math.sqrt(2 * math.pi))
        return math.exp(log_q) * (log_q - log_p(z))

    value, err = integrate.quad(integrand, q_loc - 12 * q_scale, q_loc + 12 * q_scale,
                                limit=200, epsabs=1e-10)
    assert err < 1e-7
    return value


def mixture_logpdf(weights: np.ndarray, locs: np.ndarray, scales: np.ndarray):
    """log sum_c w_c N(z; loc_c, scale_c^2), enumerated over the components."""
    log_w = np.log(weights) - np.log(scales) - 0.5 * np.log(2 * np.pi)

    def log_p(z: float) -> float:
        return float(logsumexp(log_w - 0.5 * ((z - locs) / scales) ** 2))
    return log_p


def check_mc_kl_against_quadrature(q: Independent, p, log_p_np) -> None:
    assert not has_analytic_kl(q, p)
    torch.manual_seed(3)
    z = q.sample((40000,))  # (S, B, 1)
    mc = kl_term(q, p, z=z, mode="auto")  # falls back to Monte Carlo
    samples = q.log_prob(z) - p.log_prob(z)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    for b in range(q.batch_shape[0]):
        exact = quad_kl(q.base_dist.loc[b, 0].item(), q.base_dist.scale[b, 0].item(), log_p_np)
        assert abs(mc[b].item() - exact) <= Z * stderr[b].item() + 1e-9, (b, mc[b], exact)


def test_mixture_prior_monte_carlo_kl_matches_quadrature():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(1, 3).double()
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -0.5]))
        prior.loc.copy_(torch.tensor([[-2.0], [0.5], [3.0]]))
        prior.raw_scale.copy_(torch.tensor([[0.0], [-1.0], [1.0]]))
    p = prior()
    weights = torch.softmax(prior.logits, 0).detach().numpy()
    locs = prior.loc[:, 0].detach().numpy()
    scales = p.component_distribution.base_dist.scale[:, 0].detach().numpy()
    q = diag_normal(torch.tensor([[-1.5], [0.0], [2.5], [6.0]], dtype=D64),
                    torch.tensor([[0.3], [1.2], [0.7], [0.5]], dtype=D64))
    check_mc_kl_against_quadrature(q, p, mixture_logpdf(weights, locs, scales))


def tiny_vamp(posterior: nn.Module, k: int = 3, data_dim: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(data_dim, 8), nn.Tanh(),
                            nn.Linear(8, posterior.param_size)).double()
    init = torch.rand(k, data_dim, dtype=D64)
    return VampPrior(encoder, posterior, init), encoder


def test_vamp_prior_is_the_mean_of_the_encoders_posteriors_at_the_pseudo_inputs():
    """log p(z) = log 1/K sum_k q(z|u_k), enumerated with scipy for a full-covariance q."""
    prior, encoder = tiny_vamp(FullCovarianceGaussian(2), k=4)
    p = prior()
    z = torch.randn(10, 2, dtype=D64)
    with torch.no_grad():
        comps = FullCovarianceGaussian(2)(encoder(prior.pseudo_inputs))
        dens = np.stack([stats.multivariate_normal(comps.loc[k].numpy(),
                                                   comps.covariance_matrix[k].numpy())
                         .pdf(z.numpy()) for k in range(4)])
    torch.testing.assert_close(p.log_prob(z).detach(),
                               torch.from_numpy(np.log(dens.mean(0))), rtol=1e-9, atol=1e-9)


def test_vamp_prior_monte_carlo_kl_matches_quadrature():
    prior, _encoder = tiny_vamp(DiagonalGaussian(1), k=3)
    p = prior()
    with torch.no_grad():
        comps = p.component_distribution.base_dist
        locs, scales = comps.loc[:, 0].numpy(), comps.scale[:, 0].numpy()
    q = diag_normal(torch.tensor([[0.0], [1.5], [-2.0]], dtype=D64),
                    torch.tensor([[0.5], [0.2], [1.0]], dtype=D64))
    with torch.no_grad():
        check_mc_kl_against_quadrature(q, p, mixture_logpdf(np.full(3, 1 / 3), locs, scales))


# -- the VampPrior inside a VAE -----------------------------------------------------------------

def vamp_cfg(**kw) -> ModelConfig:
    base = dict(latent="gaussian", latent_dim=3, prior="vamp", prior_components=5,
                hidden=[16], likelihood="bernoulli")
    return ModelConfig(**{**base, **kw})


def test_vamp_prior_shares_the_encoder_without_duplicating_it():
    torch.manual_seed(0)
    data = torch.rand(20, 6)
    model = build_model(vamp_cfg(), (6,), data_x=data)
    keys = list(model.state_dict())
    assert "prior_module.pseudo_inputs" in keys
    assert not any(k.startswith("prior_module.") and k != "prior_module.pseudo_inputs"
                   for k in keys)
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))
    # pseudo-inputs start at training points
    assert all(any(torch.equal(u, x) for x in data) for u in model.prior_module.pseudo_inputs)
    # a fresh model loads the state and gives the same prior
    other = build_model(vamp_cfg(), (6,))
    other.load_state_dict(model.state_dict())
    z = torch.randn(4, 3)
    torch.testing.assert_close(other.prior().log_prob(z), model.prior().log_prob(z))
    # a deep copy uses its own copy of the encoder
    clone = copy.deepcopy(model)
    assert clone.prior_module._shared[0] is clone.encoder
    # and .double() converts the prior with the model
    model.double()
    assert model.prior().log_prob(z.double()).dtype == D64


def test_vamp_prior_trains_pseudo_inputs_and_encoder_through_the_kl():
    torch.manual_seed(0)
    model = build_model(vamp_cfg(), (6,), data_x=torch.rand(20, 6))
    x = torch.bernoulli(torch.rand(8, 6))
    out = elbo(model, x, samples=2)
    assert torch.isfinite(out.kl).all()
    out.loss.backward()
    assert model.prior_module.pseudo_inputs.grad.abs().sum() > 0
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_mixture_prior_parameters_are_trained_jointly():
    torch.manual_seed(0)
    model = build_model(vamp_cfg(prior="mixture"), (6,))
    elbo(model, torch.bernoulli(torch.rand(8, 6)), samples=2).loss.backward()
    for name in ("logits", "loc", "raw_scale"):
        assert getattr(model.prior_module, name).grad.abs().sum() > 0, name


def test_sampling_from_the_prior_uses_the_mixture():
    prior = MixtureOfGaussians(2, 2)
    with torch.no_grad():
        prior.logits.copy_(torch.log(torch.tensor([0.8, 0.2])))
        prior.loc.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
    torch.manual_seed(0)
    z = prior().sample((4000,))
    frac = (z[:, 0] > 0).double().mean().item()
    assert abs(frac - 0.2) <= Z * math.sqrt(0.2 * 0.8 / 4000)


@pytest.mark.parametrize("latent,prior", [("gaussian", "mixture"), ("gaussian-full", "normal"),
                                          ("gaussian-full", "mixture"), ("gaussian", "vamp"),
                                          ("gaussian-full", "vamp")])
def test_iwae_with_one_sample_equals_the_elbo_for_every_prior_and_posterior(latent, prior):
    torch.manual_seed(0)
    model = build_model(vamp_cfg(latent=latent, prior=prior), (6,),
                        data_x=torch.rand(10, 6)).double()
    x = torch.bernoulli(torch.rand(16, 6, dtype=D64))
    torch.manual_seed(1)
    a = iwae(model, x, samples=1).bound
    torch.manual_seed(1)
    b = elbo(model, x, samples=1, kl="mc").bound
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# -- full vs diagonal posterior on the linear-Gaussian model ------------------------------------

def closed_form_elbo(lg: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    """ELBO of the current encoder, any Gaussian q: E_q log p(x|z) in closed form minus the
    analytic KL (torch's full-vs-full formula)."""
    q = lg.model.encode(x)
    cov = q.covariance_matrix if isinstance(q, MultivariateNormal) \
        else torch.diag_embed(q.variance)
    resid = x - q.mean @ lg.W.T - lg.b
    trace = torch.einsum("ij,bjk,ik->b", lg.W, cov, lg.W)
    rec = -0.5 * lg.D * math.log(2 * math.pi * lg.s**2) \
        - (resid.pow(2).sum(-1) + trace) / (2 * lg.s**2)
    q_full = MultivariateNormal(q.mean, covariance_matrix=cov)
    prior = MultivariateNormal(torch.zeros(lg.d, dtype=D64),
                               covariance_matrix=torch.eye(lg.d, dtype=D64))
    return rec - kl_divergence(q_full, prior)


def train_encoder(lg: LinearGaussian, x: torch.Tensor, steps: int = 1500) -> None:
    """Adam on vaelab's ELBO (pathwise, 16 samples, analytic KL); the decoder stays fixed."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(lg.model.encoder.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        elbo(lg.model, x, samples=16, kl="analytic").loss.backward()
        opt.step()
        sched.step()


def test_full_covariance_q_reaches_exact_log_px_where_diagonal_cannot():
    full = LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=7,
                          posterior="gaussian-full")
    diag = LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=7)
    assert torch.equal(full.W, diag.W)
    x = full.sample_x(64, seed=4)
    log_px = full.exact_log_px(x)
    # the smallest gap any diagonal q can have: KL(q* || p(z|x)) with q* the diagonal with
    # precisions Lambda_dd (Lambda = S^-1) at the exact mean,
    # = 1/2 (sum_d log Lambda_dd - log |Lambda|)
    precision = torch.linalg.inv(full.S)
    min_diag_gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    assert min_diag_gap > 0.2  # the posterior is correlated enough to matter
    train_encoder(full, x)
    train_encoder(diag, x)
    with torch.no_grad():
        full_gap = (log_px - closed_form_elbo(full, x)).mean().item()
        diag_gap = (log_px - closed_form_elbo(diag, x)).mean().item()
    assert full_gap >= -1e-9 and diag_gap >= -1e-9  # both are lower bounds
    assert full_gap < 2e-3, full_gap  # the full-covariance q is the exact posterior
    assert diag_gap >= min_diag_gap - 1e-9
    assert diag_gap < min_diag_gap + 0.01  # training reached the best diagonal q
    q = full.model.encode(x[:1])
    torch.testing.assert_close(q.covariance_matrix[0].detach(), full.S, atol=5e-3, rtol=0)


def test_iwae_bound_increases_with_k_for_a_full_covariance_posterior():
    lg = LinearGaussian(data_dim=5, latent_dim=2, noise_std=0.5, seed=1,
                        posterior="gaussian-full")  # random encoder: a loose bound
    x = lg.sample_x(100, seed=7)
    torch.manual_seed(8)
    means = []
    for k in (1, 10, 100):
        reps = torch.stack([iwae(lg.model, x, samples=k).bound for _ in range(20)]).mean(1)
        means.append((reps.mean().item(), reps.std().item() / math.sqrt(reps.numel())))
    for (a, ea), (b, eb) in itertools.pairwise(means):
        assert b - a > Z * math.hypot(ea, eb), (a, b)
    assert means[-1][0] < lg.exact_log_px(x).mean().item() + Z * means[-1][1]


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(prior="mixture", prior_components=0), "prior_components=0: must be an integer >= 1"),
    (dict(prior="vamp", prior_components=0), "prior_components=0: must be an integer >= 1"),
    (dict(latent="gaussian-full", prior="uniform"), "model.prior=uniform is a prior over "
                                                    "discrete codes"),
    (dict(latent="categorical", prior="mixture"), "model.prior=mixture is a prior over "
                                                  "real-valued z"),
    (dict(latent="bernoulli", prior="vamp"), "model.prior=vamp is a prior over real-valued z"),
    (dict(prior="flat"), "model.prior='flat': must be one of 'auto'"),
], ids=["mixture-C0", "vamp-K0", "full-with-categorical-prior", "categorical-with-mixture",
        "bernoulli-with-vamp", "unknown"])
def test_bad_prior_posterior_combinations_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        build_model(vamp_cfg(**kw), (6,))


@pytest.mark.parametrize("posterior", [DiagonalGaussian(3), FullCovarianceGaussian(3)],
                         ids=["diagonal-matmul", "full-chunked"])
def test_mixture_log_prob_equals_torchs_elementwise_one_with_gradients(posterior):
    """The prior's mixture log_prob (matrix products for diagonal components, chunks for
    full ones) against torch's MixtureSameFamily, in float32 with small and large scales."""
    torch.manual_seed(0)
    encoder = nn.Linear(4, posterior.param_size)
    with torch.no_grad():
        encoder.bias[3:].copy_(torch.linspace(-6, 3, posterior.param_size - 3))  # scales
    prior = VampPrior(encoder, posterior, 3 * torch.randn(6, 4))
    p = prior()
    p.max_elements = 40  # a few points per chunk
    z = (4 * torch.randn(5, 7, 3)).requires_grad_()
    ours = p.log_prob(z)
    ref = torch.distributions.MixtureSameFamily(p.mixture_distribution,
                                                p.component_distribution).log_prob(z)
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=1e-3)
    g1 = torch.autograd.grad(ours.sum(), [z, prior.pseudo_inputs], retain_graph=True)
    g2 = torch.autograd.grad(ref.sum(), [z, prior.pseudo_inputs])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_mixture_log_prob_with_far_components_equals_torchs_with_and_without_gradients():
    """Components hundreds of nats apart (terms that exp underflows, floored for speed) and
    several blocks of rows: the same values as torch's logsumexp in float64, on both the
    differentiable path and the blocked one evaluation takes."""
    from vaelab.models import priors

    torch.manual_seed(0)
    loc = torch.cat([torch.zeros(1, 4), 40 * torch.randn(7, 4)]).double()
    scale = torch.rand(8, 4).double() * 0.5 + 0.05
    mixture = priors.ChunkedMixture(
        Categorical(logits=torch.randn(8).double()),
        Independent(Normal(loc, scale), 1), validate_args=False)
    z = torch.cat([torch.randn(300, 4), 40 * torch.randn(300, 4)]).double()
    ref = torch.distributions.MixtureSameFamily(mixture.mixture_distribution,
                                                mixture.component_distribution).log_prob(z)
    args = mixture.component_distribution.log_prob(z[:, None]) + torch.log_softmax(
        mixture.mixture_distribution.logits, -1)
    assert (args - args.amax(-1, keepdim=True) < priors.EXP_FLOOR).float().mean() > 0.3
    old = priors.BLOCK_ELEMENTS
    try:
        priors.BLOCK_ELEMENTS = 8 * 37  # 37 rows per block: a ragged last block
        with torch.no_grad():
            blocked = mixture.log_prob(z)
    finally:
        priors.BLOCK_ELEMENTS = old
    zg = z.clone().requires_grad_()
    grad_path = mixture.log_prob(zg)
    torch.testing.assert_close(blocked, ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(grad_path.detach(), ref, rtol=1e-12, atol=1e-9)
    (g,) = torch.autograd.grad(grad_path.sum(), zg)
    (g_ref,) = torch.autograd.grad(torch.distributions.MixtureSameFamily(
        mixture.mixture_distribution, mixture.component_distribution).log_prob(zg).sum(), zg)
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_floored_logsumexp_keeps_infinite_and_nan_rows_as_torch():
    from vaelab.models.priors import floored_logsumexp

    rows = torch.tensor([[-math.inf, -math.inf], [math.inf, 0.0], [math.nan, 1.0], [-1e4, 0.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(floored_logsumexp(rows), torch.logsumexp(rows, -1),
                               equal_nan=True)
