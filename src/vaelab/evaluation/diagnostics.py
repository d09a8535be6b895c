"""Collapse diagnostics: KL per latent dimension over an evaluation set, the collapse warning,
and the prior's components in the 2-D latent plot.

Posterior collapse (q(z_d|x) = p(z_d) for every x) shows as a latent dimension with zero KL
and no activity (Burda et al. 2016's active units). ``kl_per_dimension`` splits the KL:

* "exact": q and p both factorize over dimensions with a closed form per factor (diagonal
  Gaussian q with the standard normal prior; discrete codes with a factorized prior), so the
  values sum to the total KL.
* "marginal": otherwise, when both have 1-D Gaussian(-mixture) marginals (a full-covariance
  q; a mixture or VampPrior p), KL(q(z_d|x) || p(z_d)) between the marginals, in closed form
  or by Monte Carlo. These do not sum to the total: with a factorized p the total exceeds
  their sum by q's total correlation; with a mixture p there is no such identity. They still
  show which dimensions carry information.
* None: no 1-D marginals are defined for the family.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import (
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from vaelab.models.latent_space import marginals
from vaelab.models.vae import VAE

COLLAPSE_FRACTION = 0.5  # warn when more than this fraction of the units is inactive


def _mixture_size(p: Distribution) -> int:
    return p.mixture_distribution.logits.shape[-1] if isinstance(p, MixtureSameFamily) else 1


def _per_dim_kl(q: Distribution, p: Distribution, eps: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(B, D) KL split of one batch and its kind ("exact" or "marginal")."""
    if isinstance(q, Independent) and isinstance(p, Independent) \
            and q.reinterpreted_batch_ndims == 1 and p.reinterpreted_batch_ndims == 1:
        try:
            return kl_divergence(q.base_dist, p.base_dist).flatten(1), "exact"
        except NotImplementedError:
            pass
    qm, pm = marginals(q), marginals(p)  # ValueError when there are none
    try:
        return kl_divergence(qm, pm), "marginal"
    except NotImplementedError:
        if not isinstance(qm, Normal):
            raise ValueError(f"no Monte Carlo KL split for a {type(qm).__name__} q") from None
        z = qm.loc + qm.scale * eps[:, : qm.loc.shape[0]]  # (S, B, D)
        return (qm.log_prob(z) - pm.log_prob(z)).mean(0), "marginal"


@torch.no_grad()
def kl_per_dimension(model: VAE, x: torch.Tensor, *, samples: int = 32, seed: int = 0,
                     budget: int = 4_000_000, mc_points: int = 1000, mc_samples: int = 8,
                     ) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Mean KL per latent dimension over ``x``: (values (D,), stderr (D,), kind), or None.

    kind "exact" or "marginal" as in the module docstring. The prior is built once and x is
    chunked so a Monte Carlo marginal KL against a K-component mixture holds at most
    ``budget`` numbers at a time; the noise is fixed by ``seed``. Against a mixture (Monte
    Carlo, samples x points x D x K work) only the first ``mc_points`` points are used, with
    ``mc_samples`` draws each.
    """
    p = model.prior()
    if isinstance(p, MixtureSameFamily):
        x, samples = x[:mc_points], mc_samples
    d = math.prod(model.latent_shape)
    chunk = max(1, min(1000, budget // (samples * d * _mixture_size(p))))
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((samples, chunk, d), generator=gen, dtype=x.dtype).to(x.device)
    parts, kind = [], "exact"
    for start in range(0, x.shape[0], chunk):
        q = model.encode(x[start: start + chunk])
        try:
            per, kind = _per_dim_kl(q, p, eps.to(q.mean.dtype))
        except ValueError:  # no 1-D marginals for this family
            return None
        parts.append(per)
    per = torch.cat(parts)  # (N, D)
    stderr = per.std(0) / math.sqrt(per.shape[0]) if per.shape[0] > 1 \
        else torch.full_like(per[0], float("nan"))
    return per.mean(0), stderr, kind


def collapse_warning(active: int, total: int, threshold: float) -> str | None:
    """A one-line warning when more than half of the latent units are inactive."""
    if total == 0 or total - active <= COLLAPSE_FRACTION * total:
        return None
    return (f"posterior collapse: only {active} of {total} latent units are active "
            f"(Cov_x E[z_d|x] > {threshold}); try KL warm-up (objective.warmup_epochs), free "
            "bits (objective.free_bits) or a smaller model.latent_dim")


def prior_components(p: Distribution) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(weights (C,), means (C, D), covariances (C, D, D)) of a Gaussian or Gaussian mixture."""
    if isinstance(p, MixtureSameFamily):
        weights = p.mixture_distribution.probs
        comp = p.component_distribution
    else:
        weights, comp = torch.ones(1), p
    if isinstance(comp, MultivariateNormal):
        means, covs = comp.loc, comp.covariance_matrix
    elif isinstance(comp, Independent) and isinstance(comp.base_dist, Normal):
        means, covs = comp.base_dist.loc, torch.diag_embed(comp.base_dist.scale.pow(2))
    else:
        return None
    d = means.shape[-1]
    return weights.reshape(-1), means.reshape(-1, d), covs.reshape(-1, d, d)


@torch.no_grad()
def output_range_check(model: VAE, likelihood_name: str, x: torch.Tensor, *, is_8bit: bool,
                       binarized: bool) -> dict[str, Any]:
    """Does the decoder's output range (its likelihood's support and the means it produces)
    match the data's range? Returns {"status": ok|warning|error, "note", ranges}."""
    lo, hi = x.min().item(), x.max().item()
    means = model.reconstruct(x[:256])
    out: dict[str, Any] = {"data_range": [round(lo, 6), round(hi, 6)],
           "decoder_mean_range": [round(means.min().item(), 6), round(means.max().item(), 6)]}
    inside = lo >= 0.0 and hi <= 1.0
    binary = bool(((x == 0) | (x == 1)).all())
    if likelihood_name in ("bernoulli", "continuous-bernoulli", "logistic-256") and not inside:
        status, note = "error", f"{likelihood_name} needs data in [0, 1]; the data are not"
    elif likelihood_name == "bernoulli" and not (binarized or binary):
        status, note = "warning", ("Bernoulli on non-binary intensities is not a normalised "
                                   "density on [0, 1]; set data.binarize or use "
                                   "model.likelihood=continuous-bernoulli")
    elif likelihood_name == "logistic-256" and not is_8bit:
        status, note = "error", "logistic-256 needs 8-bit data (values k/255)"
    elif likelihood_name == "gaussian" and inside:
        status, note = "warning", ("Gaussian density on [0, 1] data: its support is the real "
                                   "line and the decoder mean is unbounded, so log p(x) is a "
                                   "density (not a probability) and not comparable with "
                                   "discrete likelihoods")
    else:
        status, note = "ok", f"{likelihood_name} support covers the data's range"
    out.update(status=status, note=note)
    return out
