"""KL(q || p): analytic through ``torch.distributions.kl_divergence`` where a closed form is
registered, Monte Carlo otherwise. Extra closed forms are added with ``@register_kl``.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence


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
