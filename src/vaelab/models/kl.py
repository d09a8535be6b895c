"""KL(q || p): analytic through ``torch.distributions.kl_divergence`` where a closed form is
registered, Monte Carlo otherwise. Extra closed forms are added with ``@register_kl``:
full-covariance vs diagonal Gaussians, both ways (torch has only full vs full), and a
Gaussian against the standard normal (:class:`UnitNormal`), the default model's KL.
"""

from __future__ import annotations

import torch
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)


class UnitNormal(Normal):
    """N(0, 1) elementwise (``loc`` zeros, ``scale`` ones, broadcast to the wanted shape).

    A type of its own so that the KL registry picks :func:`_kl_normal_unit`: with the zero
    mean and unit scale known, the KL takes 7 element-wise kernels instead of torch's 10
    (and fewer in the backward pass): 0.24 -> 0.11 ms per step for a 128 x 20 posterior.
    Built like a Normal (``UnitNormal(zeros, ones)``); the caller guarantees the values.
    """


@register_kl(Normal, UnitNormal)
def _kl_normal_unit(q: Normal, p: UnitNormal) -> torch.Tensor:
    """KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - log s, elementwise."""
    kl = 0.5 * (q.loc.square() + q.scale.square() - 1) - q.scale.log()
    shape = _broadcast_shapes(kl.shape, p.batch_shape)
    return kl if kl.shape == shape else kl.expand(shape)


def _broadcast_shapes(a: torch.Size, b: torch.Size) -> torch.Size:
    """``torch.broadcast_shapes(a, b)``, without its ~8 us of Python when b fits inside a
    (the usual case: a (B, D) posterior against a (D,) prior)."""
    if len(b) <= len(a) and all(n == 1 or n == m for m, n in zip(a[len(a) - len(b):], b,
                                                                   strict=True)):
        return a
    return torch.broadcast_shapes(a, b)


class NoClosedFormKL(ValueError):
    """Asked for an analytic KL between two families that have none registered."""


def has_analytic_kl(q: Distribution, p: Distribution) -> bool:
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def kl_term(q: Distribution, p: Distribution, z: torch.Tensor | None = None,
            log_q: torch.Tensor | None = None, mode: str = "auto") -> torch.Tensor:
    """Per-datapoint KL(q(z|x) || p(z)), shape ``q.batch_shape``.

    mode: "analytic" (closed form or an error), "mc" (the mean over the samples ``z`` of
    log q(z) - log p(z); z has shape ``(K, *batch, *event)``), or "auto" (analytic where
    registered, else Monte Carlo).
    """
    if mode not in ("auto", "analytic", "mc"):
        raise ValueError(f"objective.kl must be auto, analytic or mc, got '{mode}'")
    if mode != "mc":
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            if mode == "analytic":
                raise NoClosedFormKL(
                    f"no closed-form KL between {type(q).__name__} and {type(p).__name__}; "
                    "use objective.kl=mc (or auto)") from None
    if z is None:
        raise ValueError("a Monte Carlo KL needs latent samples z")
    if log_q is None:
        log_q = q.log_prob(z)
    return (log_q - p.log_prob(z)).mean(0)


@torch.distributions.register_kl(torch.distributions.Bernoulli, torch.distributions.Bernoulli)
def _kl_bernoulli_bernoulli(p, q) -> torch.Tensor:
    """KL(Bern(sigmoid(a)) || Bern(sigmoid(b))) = s(a)(sp(-b) - sp(-a)) + s(-a)(sp(b) - sp(a)).

    Replaces torch's version, which indexes with masks of q's shape and so fails when a
    batch of posteriors (B, N) meets a prior (N,) (torch 2.x); logits keep it finite.
    """
    a, b = p.logits, q.logits
    softplus = torch.nn.functional.softplus
    return (torch.sigmoid(a) * (softplus(-b) - softplus(-a))
            + torch.sigmoid(-a) * (softplus(b) - softplus(a)))


def _diagonal_normal(p: Independent) -> Normal | None:
    """The base Normal of ``Independent(Normal, 1)`` (a diagonal Gaussian), else None."""
    if isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1:
        return p.base_dist
    return None


@register_kl(MultivariateNormal, Independent)
def _kl_full_diagonal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """KL(N(m, L L^T) || N(mu, diag(s^2))) in closed form.

    = 1/2 [ sum_ij (L_ij / s_i)^2 + sum_i ((mu_i - m_i) / s_i)^2 - d
            + 2 sum_i log s_i - 2 sum_i log L_ii ].
    """
    base = _diagonal_normal(p)
    if base is None:
        raise NotImplementedError
    scale = base.scale  # (*, d)
    trace = (q.scale_tril / scale.unsqueeze(-1)).pow(2).sum((-2, -1))
    mahalanobis = ((base.loc - q.loc) / scale).pow(2).sum(-1)
    log_det_ratio = 2 * (scale.log().sum(-1)
                         - q.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    return 0.5 * (trace + mahalanobis - q.event_shape[0] + log_det_ratio)


@register_kl(Independent, MultivariateNormal)
def _kl_diagonal_full(q: Independent, p: MultivariateNormal) -> torch.Tensor:
    """KL(N(m, diag(v)) || N(mu, Sigma)): the diagonal q as a MultivariateNormal."""
    base = _diagonal_normal(q)
    if base is None:
        raise NotImplementedError
    full = MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale),
                              validate_args=False)
    return kl_divergence(full, p)
