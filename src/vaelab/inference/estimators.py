"""Gradient estimators for expectations under q(z|x).

An estimator draws z and turns a per-sample objective f (shape (K, B)) into a *surrogate*
whose value equals f and whose gradient is the estimator's. The estimator follows the
distribution: pathwise needs ``has_rsample``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.inference.baselines import Baseline, LeaveOneOut
from vaelab.models.discrete import (
    base_of,
    from_log_space,
    is_categorical,
    is_discrete,
    relax,
    relax_in_log_space,
    straight_through,
)
from vaelab.rng import (
    draw,  # = q.rsample, but data-parallel runs match one process
)


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
        return draw(q, (k,))

    def surrogate(self, f: torch.Tensor, log_q: torch.Tensor | None = None,
                  x: torch.Tensor | None = None) -> torch.Tensor:
        return f


class GumbelSoftmax(Pathwise):
    """Gumbel-softmax / Concrete (Jang et al. 2017; Maddison et al. 2017), discrete q only.

    z = softmax((log pi + g) / tau), g ~ Gumbel(0, 1) (a sigmoid for Bernoulli latents): a
    pathwise gradient through a relaxed sample. Biased for the discrete ELBO (the bias
    shrinks as tau -> 0 while the variance grows); ``temperature`` is set each step by the
    objective from the schedule (see ``schedules.py``). Use the analytic KL with it.
    """

    name = "gumbel-softmax"
    hard = False  # straight-through: forward the discrete value

    def __init__(self, temperature: float = 1.0, prior_temperature: float = 0.0):
        self.temperature = temperature
        self.prior_temperature = prior_temperature  # relaxed KL only; 0 = the posterior's

    def check(self, q: Distribution) -> None:
        if not is_discrete(q):
            raise EstimatorError(
                f"objective.estimator={self.name} needs a discrete q(z|x) "
                f"(model.latent=categorical or bernoulli), got {type(base_of(q)).__name__}; "
                "use pathwise for continuous latents")

    def sample(self, q: Distribution, k: int) -> torch.Tensor:
        self.check(q)
        soft = draw(relax(q, self.temperature), (k,))  # (K, B, *latent), in the simplex
        return straight_through(soft, is_categorical(q)) if self.hard else soft

    def sample_with_relaxed_kl(self, q: Distribution, p: Distribution, k: int
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """z as :meth:`sample` draws it, and the relaxed KL's one-sample estimate
        log q_tau(y) - log p_lambda(y) at the same log-space sample y (Maddison et al.
        2017): the KL of the relaxed model, the one the decoder is trained on, instead of
        the discrete model's. lambda = ``prior_temperature`` (0: tau). Shapes (K, B, *latent)
        and (K, B)."""
        self.check(q)
        rq = relax_in_log_space(q, self.temperature)
        rp = relax_in_log_space(p, self.prior_temperature or self.temperature)
        y = draw(rq, (k,))
        kl = rq.log_prob(y) - rp.log_prob(y)
        soft = from_log_space(y, is_categorical(q))
        z = straight_through(soft, is_categorical(q)) if self.hard else soft
        return z, kl


class StraightThrough(GumbelSoftmax):
    """Straight-through Gumbel-softmax (Jang et al. 2017): the forward value is the hard
    one-hot (or 0/1) sample, the gradient is that of the relaxed sample."""

    name = "straight-through"
    hard = True


class ScoreFunction(nn.Module):
    """Score function / REINFORCE / likelihood ratio (Williams 1992): works for any q.

    grad E_q[f] = E_q[grad f] + E_q[(f - b) grad log q(z|x)] with z drawn without a gradient
    path; ``baseline`` (see ``inference/baselines.py``) supplies b and its own training loss. An
    ``nn.Module`` so the baseline's parameters and running statistics train and checkpoint
    with the objective.
    """

    name = "score-function"
    needs_log_q_gradient = True

    def __init__(self, baseline: Baseline | None = None):
        super().__init__()
        self.baseline = baseline if baseline is not None else Baseline()

    def sample(self, q: Distribution, k: int) -> torch.Tensor:
        with torch.no_grad():
            return draw(q, (k,), reparam=False)

    def _score_terms(self, signal: torch.Tensor, log_q: torch.Tensor,
                     x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(signal - b) / scale * (log_q - log_q.detach()), value 0, shape (K, B): the score
        gradient for phi. Also returns the baseline's loss as a value-0 scalar whose
        gradient (added to the training loss) trains the baseline alone."""
        signal = signal.detach()
        b = self.baseline.value(x, signal)
        centred = signal - b
        scale = self.baseline.scale()
        aux = self.baseline.loss(x, signal, centred)
        score = (centred / scale).detach() * (log_q - log_q.detach())
        return score, aux - aux.detach()

    def surrogate(self, f: torch.Tensor, log_q: torch.Tensor | None = None,
                  x: torch.Tensor | None = None) -> torch.Tensor:
        """f (K, B) -> f + score terms (value f). ``f`` must carry no gradient through z
        (z came from ``sample``); its direct gradients (decoder, prior) are kept."""
        if log_q is None:
            raise EstimatorError("the score-function estimator needs log q(z|x) of the drawn z")
        score, aux = self._score_terms(f, log_q, x)
        return f + score - aux

    def iwae_surrogate(self, log_w: torch.Tensor, log_q: torch.Tensor,
                       x: torch.Tensor | None = None) -> torch.Tensor:
        """IWAE bound L = log mean_k w_k (B,), with the score gradient for each z_k.

        ``log_w`` (K, B) keeps its direct gradients at fixed z (decoder, prior, and
        -log q's own phi-dependence); every z_k's learning signal is L itself. With the
        leave-one-out baseline the signal is VIMCO's L - L_{-k}, where L_{-k} replaces
        log w_k by the mean of the others (Mnih & Rezende 2016).
        """
        k = log_w.shape[0]
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        signal = bound.detach().expand_as(log_w)  # (K, B)
        aux: torch.Tensor | float
        if isinstance(self.baseline, LeaveOneOut):
            centred = signal - vimco_leave_one_out(log_w.detach())
            score, aux = centred * (log_q - log_q.detach()), 0.0
        else:
            score, aux = self._score_terms(signal, log_q, x)
        return bound + score.sum(0) - aux


def vimco_leave_one_out(log_w: torch.Tensor) -> torch.Tensor:
    """L_{-k} for each k (K, B): the IWAE bound with log w_k replaced by the mean of the
    other log weights (a geometric-mean stand-in that does not depend on z_k)."""
    k = log_w.shape[0]
    others = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # (K, B)
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)  # (K, K, 1)
    # row k: log_w with entry k replaced by others[k]
    replaced = torch.where(eye, others.unsqueeze(1), log_w.unsqueeze(0))  # (K, K, B)
    return torch.logsumexp(replaced, 1) - math.log(k)


# any gradient estimator (the two families share an interface, not a base class)
Estimator = Pathwise | ScoreFunction

ESTIMATORS = {"pathwise": Pathwise, "score-function": ScoreFunction}

ESTIMATORS.update({"gumbel-softmax": GumbelSoftmax, "straight-through": StraightThrough})
