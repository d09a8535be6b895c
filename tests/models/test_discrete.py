"""Discrete latents against exact values: Gumbel-max frequencies, the relaxation's limits,
straight-through, and KL / ELBO / importance-sampled log p(x) by enumerating every z.

Statistical checks use fixed seeds; a test fails when an estimate is more than Z standard
errors from the exact value (or a chi-square p-value falls below 1e-3).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.distributions import (
    Bernoulli,
    Independent,
    OneHotCategorical,
    RelaxedOneHotCategorical,
    kl_divergence,
)

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.evaluation.evaluate import elbo_terms, importance_log_likelihood
from vaelab.inference.estimators import GumbelSoftmax, StraightThrough
from vaelab.inference.objectives import elbo
from vaelab.models.discrete import (
    OneHot,
    enumerate_values,
    exact_log_likelihood,
    gumbel_max,
    harden,
    relax,
)
from vaelab.models.kl import kl_term

Z = 4.0  # allowed standard errors
EVENT = (1, 2, 2)  # 4 binary pixels: all 16 images can be enumerated too


def within(estimate: torch.Tensor, exact: torch.Tensor, stderr: torch.Tensor | float):
    diff = (estimate - exact).abs()
    assert (diff <= Z * torch.as_tensor(stderr)).all(), \
        f"max |estimate - exact| = {diff.max():.5g} > {Z} standard errors"


def chisquare_p(counts: torch.Tensor, logits: torch.Tensor) -> float:
    """Pearson chi-square p-value of category counts against softmax(logits)."""
    counts = counts.double()
    expected = counts.sum() * torch.softmax(logits.double(), -1)
    return stats.chisquare(counts.numpy(), expected.numpy()).pvalue


# -- Gumbel-max ---------------------------------------------------------------------------

def test_gumbel_max_frequencies_match_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    n = 100_000
    draws = gumbel_max(logits, (n,), generator=torch.Generator().manual_seed(0))
    assert draws.shape == (n, 5)
    assert torch.equal(draws.sum(-1), torch.ones(n))  # exactly one-hot
    assert chisquare_p(draws.sum(0), logits) > 1e-3
    # unnormalized logits: shifting all by a constant changes nothing
    shifted = gumbel_max(logits + 7.0, (n,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifted, draws)


def test_gumbel_max_batches_are_independent_categoricals():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    draws = gumbel_max(logits, (60_000,), generator=torch.Generator().manual_seed(1))
    assert draws.shape == (60_000, 2, 3)
    for row in range(2):
        assert chisquare_p(draws[:, row].sum(0), logits[row]) > 1e-3


def test_argmax_of_relaxed_sample_is_categorical_at_any_temperature():
    """argmax((l + g) / tau) = argmax(l + g): rounding a Gumbel-softmax sample is Gumbel-max."""
    logits = torch.tensor([0.5, -0.5, 1.5])
    torch.manual_seed(2)
    soft = RelaxedOneHotCategorical(torch.tensor(0.7), logits=logits).sample((60_000,))
    assert chisquare_p(harden(soft, categorical=True).sum(0), logits) > 1e-3


def test_fast_one_hot_has_the_law_and_log_prob_of_torchs():
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5]], [[-3.0, 1.0, 1.0, 0.0]]])  # (2, 1, 4)
    fast, slow = OneHot(logits=logits), OneHotCategorical(logits=logits)
    torch.manual_seed(11)
    z = fast.sample((50_000,))  # (S, 2, 1, 4)
    assert z.shape == (50_000, 2, 1, 4) and torch.equal(z.sum(-1), torch.ones(50_000, 2, 1))
    for row in range(2):
        assert chisquare_p(z[:, row, 0].sum(0), logits[row, 0]) > 1e-3
    torch.testing.assert_close(fast.log_prob(z[:100]), slow.log_prob(z[:100]))
    assert isinstance(fast.expand((3, 2, 1)), OneHot)
    assert fast.expand((3, 2, 1)).sample().shape == (3, 2, 1, 4)
    q = Independent(fast, 1)
    torch.testing.assert_close(kl_divergence(q, Independent(OneHot(logits=torch.zeros(1, 4)), 1)),
                               kl_divergence(Independent(slow, 1),
                                             Independent(OneHotCategorical(
                                                 logits=torch.zeros(1, 4)), 1)))


# -- the relaxation's limits --------------------------------------------------------------

@pytest.mark.parametrize("categorical", [True, False])
def test_relaxed_samples_approach_one_hot_as_tau_shrinks(categorical):
    q = _posterior(categorical, torch.tensor([[0.3, -0.2, 1.0, 0.0]]))
    torch.manual_seed(3)
    hardness = []
    for tau in (2.0, 1.0, 0.5, 0.1, 0.01):
        z = relax(q, tau).rsample((4000,))
        # distance to the nearest vertex: 1 - max_i z_i, or min(z, 1 - z) per bit
        dist = 1 - z.max(-1).values if categorical else torch.minimum(z, 1 - z)
        hardness.append(dist.mean().item())
    assert all(a > b for a, b in itertools.pairwise(hardness)), hardness
    assert hardness[-1] < 0.01


@pytest.mark.parametrize("categorical", [True, False])
def test_relaxed_samples_approach_simplex_centre_as_tau_grows(categorical):
    q = _posterior(categorical, torch.tensor([[0.3, -0.2, 1.0, 0.0]]))
    centre = 1 / 4 if categorical else 0.5
    torch.manual_seed(4)
    spread = []
    for tau in (1.0, 10.0, 100.0, 1000.0):
        z = relax(q, tau).rsample((4000,))
        spread.append((z - centre).abs().mean().item())
    assert all(a > b for a, b in itertools.pairwise(spread)), spread
    assert spread[-1] < 1e-3


def _posterior(categorical: bool, logits: torch.Tensor):
    """(1, 4) logits as one 4-class variable, or as four Bernoulli variables."""
    if categorical:
        return Independent(OneHotCategorical(logits=logits.unsqueeze(1)), 1)  # event (1, 4)
    return Independent(Bernoulli(logits=logits), 1)  # event (4,)


@pytest.mark.parametrize("categorical", [True, False])
def test_straight_through_is_exactly_hard_forward_and_relaxed_backward(categorical):
    torch.manual_seed(5)
    raw = torch.randn(6, 3, 5)
    logits = raw if categorical else raw.flatten(1)
    weights = torch.randn(2, *logits.shape)

    def run(estimator):
        leaf = logits.clone().requires_grad_(True)
        q = (Independent(OneHotCategorical(logits=leaf), 1) if categorical
             else Independent(Bernoulli(logits=leaf), 1))
        torch.manual_seed(6)  # the same Gumbel noise for both estimators
        z = estimator.sample(q, 2)
        (weights * z).sum().backward()
        return z.detach(), leaf.grad

    soft, soft_grad = run(GumbelSoftmax(temperature=0.5))
    hard, hard_grad = run(StraightThrough(temperature=0.5))
    expected = (F.one_hot(soft.argmax(-1), 5).float() if categorical
                else (soft > 0.5).float())
    assert torch.equal(hard, expected)  # exactly one-hot / exactly 0 or 1
    assert not torch.equal(soft, expected)  # the relaxed forward value is not
    assert torch.equal(hard_grad, soft_grad)  # identical gradients


# -- exact enumeration on a tiny model ----------------------------------------------------

def tiny_model(latent: str, prior: str = "uniform", seed: int = 0, scale: float = 3.0):
    """2 variables x 3 classes (9 codes) or 3 bits (8 codes); 4-pixel Bernoulli images.
    Weights are scaled up so q(z|x) and p(x|z) are far from uniform."""
    cfg = ModelConfig(latent=latent, latent_dim=2 if latent == "categorical" else 3,
                      num_classes=3, hidden=[8], prior=prior)
    torch.manual_seed(seed)
    model = build_model(cfg, EVENT)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        if prior == "learned":
            model.prior_module.logits.normal_()
    return model.eval()


def all_images() -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=4))).view(16, *EVENT)


def enumerate_joint(model, x):
    """log q(z|x), log p(z), log p(x|z) at every code z: (V, B) each (written out here,
    independently of vaelab.models.discrete.exact_log_likelihood)."""
    categorical = model.posterior.latent_shape.__len__() == 2
    shape = model.latent_shape
    if categorical:
        codes = [F.one_hot(torch.tensor(c), shape[1]).float()
                 for c in itertools.product(range(shape[1]), repeat=shape[0])]
    else:
        codes = [torch.tensor(c, dtype=torch.float32)
                 for c in itertools.product((0, 1), repeat=shape[0])]
    q, prior = model.encode(x), model.prior()
    rows = []
    for code in codes:
        z = code.expand(1, x.shape[0], *shape)
        rows.append((q.log_prob(z)[0], prior.log_prob(z)[0], model.decode(z).log_prob(x)[0]))
    return tuple(torch.stack(r) for r in zip(*rows, strict=True))


SCALE_IS = 2.0  # milder weights: q(z|x) is a usable proposal at every x

CASES = [("categorical", "uniform"), ("categorical", "learned"), ("bernoulli", "uniform"),
         ("bernoulli", "learned")]


@pytest.mark.parametrize(("latent", "prior"), CASES)
@torch.no_grad()
def test_analytic_kl_equals_enumerated_sum(latent, prior):
    model = tiny_model(latent, prior)
    x = all_images()
    log_q, log_p, _ = enumerate_joint(model, x)
    torch.testing.assert_close(log_q.exp().sum(0), torch.ones(16))  # q sums to one
    exact = (log_q.exp() * (log_q - log_p)).sum(0)
    analytic = kl_term(model.encode(x), model.prior(), mode="analytic")
    torch.testing.assert_close(analytic, exact, rtol=1e-5, atol=1e-6)
    assert (exact > 0.05).all()  # q is far from the prior: the check has teeth


@pytest.mark.parametrize(("latent", "prior"), CASES)
@torch.no_grad()
def test_exact_log_likelihood_is_logsumexp_over_codes_and_normalized(latent, prior):
    model = tiny_model(latent, prior)
    x = all_images()
    _, log_p, log_px_z = enumerate_joint(model, x)
    exact = torch.logsumexp(log_px_z + log_p, 0)
    torch.testing.assert_close(exact_log_likelihood(model, x), exact)
    # p(x) sums to one over all 16 binary images
    torch.testing.assert_close(exact.exp().sum(), torch.tensor(1.0))


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
@torch.no_grad()
def test_importance_weights_with_discrete_proposals_are_unbiased(latent):
    """mean_k w_k, z_k ~ q(z|x) (hard codes), estimates p(x) without bias."""
    model = tiny_model(latent, "learned")
    x = all_images()[[3, 12]]
    exact = exact_log_likelihood(model, x)
    torch.manual_seed(7)
    repeats = x.repeat(500, 1, 1, 1)  # 500 independent estimates per point, in one call
    estimates = importance_log_likelihood(model, repeats, samples=10,
                                          batch_size=1000).view(500, 2)
    ratio = torch.exp(estimates - exact)
    within(ratio.mean(0), torch.ones(2), ratio.std(0) / math.sqrt(ratio.shape[0]))


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
@torch.no_grad()
def test_is_log_likelihood_with_large_k_matches_enumeration(latent):
    """Each point within Z standard errors of the exact log p(x); the standard error of
    log mean_k w_k is sqrt(Var_q[w] / K) / p(x), with Var_q[w] itself enumerated."""
    model = tiny_model(latent, "uniform", scale=SCALE_IS)
    x = all_images()
    log_q, log_p, log_px_z = enumerate_joint(model, x)
    log_joint = log_px_z + log_p
    exact = torch.logsumexp(log_joint, 0)
    relative_var = torch.exp(torch.logsumexp(2 * log_joint - log_q, 0) - 2 * exact) - 1
    k = 4000
    torch.manual_seed(8)
    estimate = importance_log_likelihood(model, x, samples=k, sample_chunk=1000)
    stderr = (relative_var / k).sqrt()
    within(estimate, exact, stderr + relative_var / (2 * k))  # + the O(1/K) bias of the log
    assert stderr.max() < 0.3  # a proposal good enough for the check to mean something


@pytest.mark.parametrize(("latent", "prior"), CASES)
@torch.no_grad()
def test_elbo_matches_enumeration_and_gap_is_kl_to_true_posterior(latent, prior):
    model = tiny_model(latent, prior)
    x = all_images()
    log_q, log_p, log_px_z = enumerate_joint(model, x)
    q_probs = log_q.exp()
    exact_elbo = (q_probs * (log_px_z + log_p - log_q)).sum(0)
    log_px = torch.logsumexp(log_px_z + log_p, 0)
    log_post = log_px_z + log_p - log_px
    gap = (q_probs * (log_q - log_post)).sum(0)  # KL(q(z|x) || p(z|x))
    torch.testing.assert_close(log_px - exact_elbo, gap, rtol=1e-4, atol=1e-5)
    assert (gap > 1e-3).all()
    k = 3000
    torch.manual_seed(9)
    terms = elbo_terms(model, x, samples=k)  # hard samples, analytic KL
    rec_std = (q_probs * (log_px_z - (q_probs * log_px_z).sum(0)) ** 2).sum(0).sqrt()
    within(terms["elbo"], exact_elbo, rec_std / math.sqrt(k) + 1e-6)


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_straight_through_objective_value_is_the_discrete_elbo(latent):
    """ST forwards hard codes drawn from q exactly, so its ELBO value is unbiased for the
    discrete ELBO; the relaxed (Gumbel-softmax) value is a different number."""
    model = tiny_model(latent, "uniform")
    x = all_images()
    log_q, log_p, log_px_z = enumerate_joint(model, x)
    q_probs = log_q.exp()
    exact_elbo = (q_probs * (log_px_z + log_p - log_q)).sum(0).detach()
    rec_std = (q_probs * (log_px_z - (q_probs * log_px_z).sum(0)) ** 2).sum(0).sqrt().detach()
    k = 3000
    torch.manual_seed(10)
    out = elbo(model, x, samples=k, estimator=StraightThrough(temperature=1.0))
    within(out.bound, exact_elbo, rec_std / math.sqrt(k) + 1e-6)
    relaxed = elbo(model, x, samples=k, estimator=GumbelSoftmax(temperature=1.0))
    assert (relaxed.bound - exact_elbo).abs().max() > 10 * (rec_std / math.sqrt(k)).max()


def test_enumerate_values_counts():
    assert enumerate_values((2, 3), categorical=True).shape == (9, 2, 3)
    assert enumerate_values((3,), categorical=False).shape == (8, 3)
    assert torch.unique(enumerate_values((2, 3), True).flatten(1), dim=0).shape[0] == 9


def test_exact_log_likelihood_refuses_large_models():
    model = tiny_model("bernoulli")
    with pytest.raises(ValueError, match="max_values"):
        exact_log_likelihood(model, all_images(), max_values=4)
