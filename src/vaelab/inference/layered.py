"""ELBO and IWAE over a joint latent of several layers (``models/hierarchical.py``).

A model with layers returns a :class:`~vaelab.models.hierarchical.Trace`: K draws of
z_1..L with each layer's q and p. Then

    log w = log p(x|z_1) + sum_l [log p(z_l | z_{l+1}) - log q(z_l | ...)]          (K, B)

and the ELBO's KL splits over layers, KL_l = E_q[log q(z_l|.) - log p(z_l|.)]; where q and p
of a layer condition on the same draw above (``LatentLayer.analytic``) it is taken in closed
form given that draw (``kl_divergence``, Gaussian vs Gaussian), else by Monte Carlo. Free bits
(Kingma et al. 2016) floor each layer's per-dimension (or per-group) KL separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch.distributions import Distribution, kl_divergence

from vaelab.inference.estimators import Estimator, EstimatorError, Pathwise
from vaelab.inference.objectives import ObjectiveOutput, apply_free_bits
from vaelab.models.discrete import base_of
from vaelab.models.hierarchical import HierarchicalVAE, LatentLayer, Trace
from vaelab.models.kl import NoClosedFormKL
from vaelab.rng import draw


@dataclass
class LayeredOutput(ObjectiveOutput):
    layer_kl: list[torch.Tensor] = field(default_factory=list)  # (B,) per layer, bottom first

    def metrics(self) -> dict[str, torch.Tensor]:
        out = super().metrics()
        out.update({f"kl_layer{i + 1}": v.detach() for i, v in enumerate(self.layer_kl)})
        return out


def sharded_draw(q: Distribution, shape: tuple[int, ...]) -> torch.Tensor:
    return draw(q, shape)


def layer_kl_dims(layer: LatentLayer, mode: str = "auto") -> torch.Tensor:
    """Per-dimension KL of one layer, (K, B, d): closed form given the draws above where
    ``layer.analytic`` (and ``mode`` is not "mc"), else log q - log p at the draw."""
    if mode not in ("auto", "analytic", "mc"):
        raise ValueError(f"objective.kl must be auto, analytic or mc for hierarchical models, "
                         f"got '{mode}'")
    if mode == "analytic" and not layer.analytic:
        raise NoClosedFormKL("objective.kl=analytic: with model.inference=bottom-up, p(z_l|"
                             "z_{l+1}) reads a draw made after z_l, so the lower layers' KL "
                             "has no closed form; use objective.kl=auto (or top-down)")
    q, p = base_of(layer.q), base_of(layer.p)  # the per-dimension Normals
    if layer.analytic and mode != "mc":
        kl = kl_divergence(q, p)
    else:
        kl = q.log_prob(layer.z) - p.log_prob(layer.z)
    return kl.expand(layer.z.shape)


def layer_kls(trace: Trace, mode: str = "auto") -> list[torch.Tensor]:
    """KL of each layer per draw, (K, B) each, bottom first."""
    return [layer_kl_dims(layer, mode).sum(-1) for layer in trace.layers]


def log_weights(trace: Trace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log w, log p(x|z_1), log p(z) - log q(z|x)) of each draw, (K, B) each."""
    log_w, log_px_z, _ = _log_weight_terms(trace)
    return log_w, log_px_z, log_w - log_px_z


def layer_log_ratios(layers: list[LatentLayer]) -> list[torch.Tensor]:
    """log p(z_l|.) - log q(z_l|.) of each layer's draws, (K, B) each, bottom first."""
    return [layer.p.log_prob(layer.z) - layer.q.log_prob(layer.z) for layer in layers]


def _log_weight_terms(trace: Trace) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(log w, log p(x|z_1), [log p(z_l|.) - log q(z_l|.)] per layer), each (K, B)."""
    log_px_z = trace.px.log_prob(trace.x)
    per_layer = layer_log_ratios(trace.layers)
    # cast: sum() of tensors (one per layer, at least one) is a tensor, not the start 0
    return log_px_z + cast(torch.Tensor, sum(per_layer)), log_px_z, per_layer


def _check(estimator) -> None:
    if type(estimator) is not Pathwise:
        raise EstimatorError(f"hierarchical models train with the pathwise estimator "
                             f"(Gaussian layers), got {type(estimator).__name__}; set "
                             "objective.estimator=pathwise (or auto)")


def layered_elbo(model: HierarchicalVAE, x: torch.Tensor, *, samples: int = 1, kl: str = "auto",
                 beta: float = 1.0, free_bits: float = 0.0, free_bits_groups: int = 0,
                 estimator: Estimator | None = None) -> LayeredOutput:
    """ELBO = E_q[log p(x|z_1)] - sum_l KL_l, K draws per datapoint; free bits per layer."""
    _check(estimator or Pathwise())
    trace = model.trace(x, samples, sharded_draw)
    rec = trace.px.log_prob(trace.x).mean(0)  # (B,)
    kl_dims = [layer_kl_dims(layer, kl).mean(0) for layer in trace.layers]  # (B, d_l) each
    kl_values = [k.sum(-1) for k in kl_dims]
    if free_bits > 0:
        kl_loss = sum(apply_free_bits(k, free_bits, free_bits_groups) for k in kl_dims)
    else:
        kl_loss = sum(kl_values)
    total = cast(torch.Tensor, sum(kl_values))  # a tensor: at least one layer
    loss = -(rec - beta * kl_loss).mean()
    return LayeredOutput(loss=loss, bound=(rec - total).detach(), rec=rec, kl=total,
                         layer_kl=kl_values)


def layered_iwae(model: HierarchicalVAE, x: torch.Tensor, *, samples: int = 5, beta: float = 1.0,
                 estimator: Estimator | None = None, **_: object) -> LayeredOutput:
    """IWAE bound over the joint latent: log (1/K) sum_k w_k (Burda et al. 2016); beta < 1
    (warm-up) trains on log p(x|z_1) + beta (log p(z) - log q(z|x))."""
    _check(estimator or Pathwise())
    trace = model.trace(x, samples, sharded_draw)
    log_w, log_px_z, per_layer = _log_weight_terms(trace)  # each log-density computed once
    log_ratio = log_w - log_px_z
    bound = torch.logsumexp(log_w, 0) - math.log(samples)
    log_w_train = log_w if beta == 1.0 else log_px_z + beta * log_ratio
    loss = -(torch.logsumexp(log_w_train, 0) - math.log(samples)).mean()
    layer_kl = [-t.mean(0).detach() for t in per_layer]
    return LayeredOutput(loss=loss, bound=bound.detach(), rec=log_px_z.mean(0).detach(),
                         kl=(-log_ratio).mean(0).detach(), layer_kl=layer_kl)


LAYERED_OBJECTIVES = {"elbo": layered_elbo, "iwae": layered_iwae}
