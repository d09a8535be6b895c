"""Objectives: lower bounds on log p(x) and the losses that train them.

Each returns an ``ObjectiveOutput`` with per-datapoint values of the *true* bound (what is
logged and compared) and a scalar ``loss`` whose gradient is the chosen estimator's (with KL
weight and free bits applied). Reduction: sum over data elements and latent dimensions,
mean over the batch; values are in nats per datapoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from vaelab.inference.estimators import Estimator, Pathwise, ScoreFunction
from vaelab.models.kl import kl_term
from vaelab.models.vae import VAE


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar to minimise
    bound: torch.Tensor  # (B,) the bound's value per datapoint (ELBO or IWAE, beta = 1)
    rec: torch.Tensor  # (B,) E_q[log p(x|z)], the reconstruction term
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)), analytic or Monte Carlo

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"bound": self.bound.detach(), "rec": self.rec.detach(), "kl": self.kl.detach()}


def kl_by_dimension(q: Distribution, p: Distribution) -> torch.Tensor:
    """KL split over latent dimensions, (B, D): needs factorized q and p with a closed form."""
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        raise ValueError("free bits and per-dimension KL need a factorized posterior and prior "
                         f"(got {type(q).__name__} and {type(p).__name__}); "
                         "use model.latent=gaussian with the normal prior")
    return kl_divergence(q.base_dist, p.base_dist)


def apply_free_bits(kl_dims: torch.Tensor, free_bits: float, groups: int = 0) -> torch.Tensor:
    """Kingma et al. 2016: each dimension's batch-mean KL counts as at least ``free_bits``.

    Returns a per-datapoint KL for the loss whose batch mean equals
    sum_d max(free_bits, mean_batch KL_d); below the floor a dimension gets no gradient.
    ``groups`` > 0 applies the floor to the KL summed over each of that many equal,
    contiguous groups of dimensions instead (the paper's grouped variant).
    """
    if groups > 0:
        b, d = kl_dims.shape
        if d % groups:
            raise ValueError(f"objective.free_bits_groups={groups} does not divide the {d} "
                             "latent dimensions; pick a divisor of model.latent_dim")
        kl_dims = kl_dims.reshape(b, groups, d // groups).sum(-1)  # (B, G)
    mean_dims = kl_dims.mean(0)  # (D,) or (G,)
    keep = (mean_dims > free_bits).to(kl_dims.dtype)
    floor = (1 - keep) * free_bits
    return (kl_dims * keep).sum(-1) + floor.sum()


def elbo(model: VAE, x: torch.Tensor, *, samples: int = 1, kl: str = "auto", beta: float = 1.0,
         free_bits: float = 0.0, free_bits_groups: int = 0,
         estimator: Estimator | None = None) -> ObjectiveOutput:
    """ELBO = E_q[log p(x|z)] - KL(q||p) with K Monte Carlo samples per datapoint."""
    estimator = estimator or Pathwise()
    q = model.encode(x)
    p = model.prior()
    if kl == "relaxed":  # the Concrete relaxation's own KL (gumbel-softmax estimators)
        sample_with_relaxed_kl = getattr(estimator, "sample_with_relaxed_kl", None)
        if sample_with_relaxed_kl is None:
            raise ValueError(f"kl='relaxed' needs a relaxed estimator (GumbelSoftmax or "
                             f"StraightThrough), got {type(estimator).__name__}; use "
                             "kl='analytic' with it")
        z, kl_samples = sample_with_relaxed_kl(q, p, samples)
        log_px_z = model.decode(z).log_prob(x)  # (K, B)
        loss = -(log_px_z - beta * kl_samples).mean()
        rec, kl_value = log_px_z.mean(0), kl_samples.mean(0)
        return ObjectiveOutput(loss=loss, bound=(rec - kl_value).detach(), rec=rec,
                               kl=kl_value)
    z = estimator.sample(q, samples)  # (K, B, *latent)
    log_px_z = model.decode(z).log_prob(x)  # (K, B)
    needs_log_q = kl == "mc" or estimator.needs_log_q_gradient
    analytic_kl = None if kl == "mc" else _try_analytic(q, p, kl)
    if analytic_kl is not None:
        log_q = q.log_prob(z.detach()) if needs_log_q else None
        kl_value = analytic_kl
        if free_bits > 0:
            kl_loss = apply_free_bits(kl_by_dimension(q, p), free_bits, free_bits_groups)
        else:
            kl_loss = kl_value
        f = estimator.surrogate(log_px_z, log_q, x)  # (K, B)
        loss = -(f.mean(0) - beta * kl_loss).mean()
        rec = log_px_z.mean(0)
    else:
        if free_bits > 0:
            raise ValueError("free bits need a closed-form KL; set objective.free_bits=0 or use "
                             "a factorized Gaussian posterior with the normal prior")
        log_q_z = q.log_prob(z)  # (K, B), with the pathwise gradient when z has one
        log_p_z = p.log_prob(z)
        kl_samples = log_q_z - log_p_z
        f = log_px_z - beta * kl_samples
        log_q = None
        if estimator.needs_log_q_gradient:
            # z carries no gradient here, so log q(z)'s only phi-term is its direct one, with
            # mean zero (E_q grad log q = 0): it adds variance, not signal. phi's gradient
            # comes from the score term alone; the prior's parameters keep theirs.
            log_q = log_q_z
            f = log_px_z - beta * (log_q_z.detach() - log_p_z)
        loss = -estimator.surrogate(f, log_q, x).mean()
        rec = log_px_z.mean(0)
        kl_value = kl_samples.mean(0)
    return ObjectiveOutput(loss=loss, bound=(rec - kl_value).detach(), rec=rec, kl=kl_value)


def _try_analytic(q: Distribution, p: Distribution, mode: str) -> torch.Tensor | None:
    if mode == "analytic":
        return kl_term(q, p, mode="analytic")
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def log_weights(model: VAE, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) for z of shape (K, B, *latent): (K, B)."""
    log_px_z, log_pz = model.log_joint(x, z)
    return log_px_z + log_pz - q.log_prob(z)


def iwae(model: VAE, x: torch.Tensor, *, samples: int = 5,
         estimator: Estimator | None = None, beta: float = 1.0,
         **_: object) -> ObjectiveOutput:
    """IWAE bound (Burda et al. 2016): log (1/K) sum_k w_k; K=1 is the ELBO with MC KL.

    ``beta`` < 1 (KL warm-up) trains on log w_beta = log p(x|z) + beta (log p(z) - log q(z|x));
    the reported bound is always the true one (beta = 1).
    """
    estimator = estimator or Pathwise()
    q = model.encode(x)
    z = estimator.sample(q, samples)
    log_px_z, log_pz = model.log_joint(x, z)
    log_q = q.log_prob(z)
    log_w = log_px_z + log_pz - log_q  # (K, B)
    bound = torch.logsumexp(log_w, 0) - math.log(samples)
    log_w_train = log_w if beta == 1.0 else log_px_z + beta * (log_pz - log_q)
    if isinstance(estimator, ScoreFunction):  # z has no gradient path: score terms (VIMCO)
        loss = -estimator.iwae_surrogate(log_w_train, log_q, x).mean()
    else:
        loss = -(torch.logsumexp(log_w_train, 0) - math.log(samples)).mean()
    return ObjectiveOutput(loss=loss, bound=bound.detach(), rec=log_px_z.mean(0).detach(),
                           kl=(log_q - log_pz).mean(0).detach())


OBJECTIVES = {"elbo": elbo, "iwae": iwae}
