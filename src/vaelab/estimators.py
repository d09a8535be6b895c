"""Gradient estimators for expectations under q(z|x).

An estimator draws z and turns a per-sample objective f (shape (K, B)) into a *surrogate*
whose value equals f and whose gradient is the estimator's. The estimator follows the
distribution: pathwise needs ``has_rsample``.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution


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


ESTIMATORS = {"pathwise": Pathwise}
