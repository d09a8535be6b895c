"""Binary codes' posterior (models/discrete.py, Binary): Bernoulli draws from uniforms."""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Independent

from vaelab.models.discrete import Binary, is_discrete
from vaelab.models.latents import BernoulliLatent


def test_the_draws_have_the_bernoulli_means_within_their_standard_errors():
    probs = torch.tensor([0.0, 1e-3, 0.1, 0.5, 0.9, 0.999, 1.0])
    torch.manual_seed(0)
    n = 200_000
    z = Binary(probs=probs).sample((n,))
    assert z.dtype == probs.dtype and set(z.unique().tolist()) <= {0.0, 1.0}
    assert z[:, 0].sum() == 0 and z[:, -1].sum() == n  # p = 0 and 1 exactly
    se = (probs * (1 - probs) / n).sqrt()
    assert ((z.mean(0) - probs).abs() <= 4 * se + 1e-9).all(), z.mean(0)


def test_draws_are_independent_across_variables_and_samples():
    torch.manual_seed(1)
    z = Binary(logits=torch.zeros(2)).sample((100_000,))
    corr = torch.corrcoef(z.T)[0, 1]
    assert abs(corr) < 4 / math.sqrt(100_000)  # 4 standard errors of a zero correlation


def test_everything_but_sampling_is_torchs_bernoulli():
    logits = torch.randn(3, 5)
    ours, theirs = Binary(logits=logits), Bernoulli(logits=logits)
    z = theirs.sample((4,))
    torch.testing.assert_close(ours.log_prob(z), theirs.log_prob(z))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    assert ours.sample((4,)).shape == (4, 3, 5) and not ours.sample().requires_grad


def test_the_bernoulli_family_uses_it():
    q = BernoulliLatent(6)(torch.randn(2, 6))
    assert isinstance(q, Independent) and type(q.base_dist) is Binary and is_discrete(q)
