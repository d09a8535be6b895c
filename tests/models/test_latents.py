"""The full-covariance posterior's distribution (models/latents.py, CholeskyGaussian): the
draws, gradients, densities and KL of torch's MultivariateNormal, from faster products."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaelab.models.latents import CholeskyGaussian, FullCovarianceGaussian


def factor(*batch: int, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(*batch, d, generator=g)
    tril = torch.randn(*batch, d, d, generator=g).tril()
    tril.diagonal(dim1=-2, dim2=-1).abs_().add_(0.5)
    return loc, tril


@pytest.mark.parametrize("batch, sample", [((7,), (11,)), ((7,), ()), ((), (4, 3)),
                                           ((2, 3), (5,))])
def test_the_draws_are_multivariate_normals_with_the_same_seed(batch, sample):
    loc, tril = factor(*batch)
    torch.manual_seed(1)
    ours = CholeskyGaussian(loc, scale_tril=tril).rsample(sample)
    torch.manual_seed(1)
    theirs = MultivariateNormal(loc, scale_tril=tril).rsample(sample)
    assert ours.shape == theirs.shape == (*sample, *batch, 5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_shared_factor_broadcasts_against_batched_means():
    loc, _ = factor(7)
    _, tril = factor()
    torch.manual_seed(2)
    ours = CholeskyGaussian(loc, scale_tril=tril).sample((3,))
    torch.manual_seed(2)
    theirs = MultivariateNormal(loc, scale_tril=tril).sample((3,))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_gradients_through_the_draws_are_the_same():
    grads = []
    for cls in (CholeskyGaussian, MultivariateNormal):
        loc, tril = (t.requires_grad_() for t in factor(7))
        torch.manual_seed(3)
        z = cls(loc, scale_tril=tril).rsample((11,))
        (z.sin().sum()).backward()
        grads.append((loc.grad, tril.grad))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_density_kl_and_expand_stay_torchs():
    loc, tril = factor(7)
    q = CholeskyGaussian(loc, scale_tril=tril)
    ref = MultivariateNormal(loc, scale_tril=tril)
    z = ref.sample((4,))
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    prior = MultivariateNormal(torch.zeros(5), torch.eye(5))
    torch.testing.assert_close(kl_divergence(q, prior), kl_divergence(ref, prior))
    assert type(q.expand((2, 7))) is CholeskyGaussian


def test_the_family_builds_one():
    family = FullCovarianceGaussian(4)
    q = family(torch.randn(3, family.param_size))
    assert isinstance(q, CholeskyGaussian) and q.sample((2,)).shape == (2, 3, 4)
