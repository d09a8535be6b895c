"""Gradient estimators for expectations under q(z|x).

An estimator draws z and turns a per-sample objective f (shape (K, B)) into a *surrogate*
whose value equals f and whose gradient is the estimator's. The estimator follows the
distribution: pathwise needs ``has_rsample``.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from vaelab.discrete import base_of, is_categorical, is_discrete, relax, straight_through


class EstimatorError(ValueError):
    """An estimator that cannot be used with the chosen latent family."""


class Pathwise:
    """Reparameterization: z = g(eps, phi), the gradient flows through z (Kingma & Welling)."""

    name = "pathwise"
    needs_log_q_gradient = False

    def check(self, q: Distribution) -> None:
        if not q.has_rsample:
            raise EstimatorError(
                f"objective.estimator=pathwise needs a reparameterizable q(z|x), but "
                f"{type(q).__name__} has no rsample; use score-function (any family) or, "
                "for discrete latents, gumbel-softmax or straight-through")

    def sample(self, q: Distribution, k: int) -> torch.Tensor:
        self.check(q)
        return q.rsample((k,))

    def surrogate(self, f: torch.Tensor, log_q: torch.Tensor | None = None,
                  x: torch.Tensor | None = None) -> torch.Tensor:
        return f


class GumbelSoftmax(Pathwise):
    """Gumbel-softmax / Concrete (Jang et al. 2017; Maddison et al. 2017), discrete q only.

    z = softmax((log pi + g) / tau), g ~ Gumbel(0, 1) (a sigmoid for Bernoulli latents): a
    pathwise gradient through a relaxed sample. Biased for the discrete ELBO (the bias
    shrinks as tau -> 0 while the variance grows); ``temperature`` is set each step by the
    objective from the schedule (see ``temperature.py``). Use the analytic KL with it.
    """

    name = "gumbel-softmax"
    hard = False  # straight-through: forward the discrete value

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def check(self, q: Distribution) -> None:
        if not is_discrete(q):
            raise EstimatorError(
                f"objective.estimator={self.name} needs a discrete q(z|x) "
                f"(model.latent=categorical or bernoulli), got {type(base_of(q)).__name__}; "
                "use pathwise for continuous latents")

    def sample(self, q: Distribution, k: int) -> torch.Tensor:
        self.check(q)
        soft = relax(q, self.temperature).rsample((k,))  # (K, B, *latent), in the simplex
        return straight_through(soft, is_categorical(q)) if self.hard else soft


class StraightThrough(GumbelSoftmax):
    """Straight-through Gumbel-softmax (Jang et al. 2017): the forward value is the hard
    one-hot (or 0/1) sample, the gradient is that of the relaxed sample."""

    name = "straight-through"
    hard = True


ESTIMATORS = {"pathwise": Pathwise}

ESTIMATORS.update({"gumbel-softmax": GumbelSoftmax, "straight-through": StraightThrough})
