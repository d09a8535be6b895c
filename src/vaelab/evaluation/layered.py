"""Evaluation over a joint latent of several layers (``models/hierarchical.py``).

The same numbers as ``evaluation/evaluate.py`` reports for one layer, computed from the model's
:class:`~vaelab.models.hierarchical.Trace`: per-datapoint ELBO with its KL split by layer,
the importance-sampled log p(x) with

    log w = log p(x|z_1) + sum_l log p(z_l|z_{l+1}) - sum_l log q(z_l|...),

chunked over datapoints and draws, and active units per layer (Burda et al. 2016) with a
collapse warning that names the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from vaelab import console
from vaelab.evaluation.chunked import chunked_log_mean_exp
from vaelab.evaluation.diagnostics import COLLAPSE_FRACTION
from vaelab.evaluation.fused_weights import decoder_plan, layered_log_prob
from vaelab.inference.layered import layer_kls, layer_log_ratios, log_weights
from vaelab.models.hierarchical import HierarchicalVAE


def _sample(q, shape):
    return q.sample(torch.Size(shape))


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size]


@torch.no_grad()
def elbo_terms(model: HierarchicalVAE, x: torch.Tensor, *, samples: int = 1,
               kl: str = "auto", batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per-datapoint ELBO, rec, KL and each layer's KL (``kl_layer1``...), (N,) each."""
    out: dict[str, list[torch.Tensor]] = {"elbo": [], "rec": [], "kl": []}
    out.update({f"kl_layer{i + 1}": [] for i in range(model.depth)})
    for xb in _batches(x, batch_size):
        trace = model.trace(xb, samples, _sample)
        rec = trace.px.log_prob(trace.x).mean(0)
        kls = [k.mean(0) for k in layer_kls(trace, kl)]
        total = cast(torch.Tensor, sum(kls))  # a tensor: at least one layer
        out["elbo"].append(rec - total)
        out["rec"].append(rec)
        out["kl"].append(total)
        for i, k in enumerate(kls):
            out[f"kl_layer{i + 1}"].append(k)
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def importance_log_likelihood(model: HierarchicalVAE, x: torch.Tensor, *, samples: int = 5000,
                              batch_size: int = 20, sample_chunk: int = 250,
                              progress: bool = False, fused: bool = True) -> torch.Tensor:
    """log p(x) ~ logsumexp_k log w_k - log K over the joint latent z_k ~ q(z|x): (N,).
    ``fused``: log p(x|z_1) of an MLP Bernoulli decoder without distribution objects
    (``evaluation/fused_weights.py``; the same draws and values)."""
    results = []
    bar = console.progress(x.shape[0], f"log p(x), K={samples}", enabled=progress,
                           log_lines=True)
    decoder = decoder_plan(model) if fused else None
    for xb in _batches(x, batch_size):
        def log_w(k: int, xb: torch.Tensor = xb) -> torch.Tensor:
            if decoder is None:
                return log_weights(model.trace(xb, k, _sample))[0]  # (k, B)
            data, y = model.split(xb)
            layers = model.latents(xb, k, _sample)  # the draws of model.trace
            log_px_z = layered_log_prob(decoder, model, layers[0].z, data, y)
            return log_px_z + cast(torch.Tensor, sum(layer_log_ratios(layers)))

        results.append(chunked_log_mean_exp(log_w, samples, sample_chunk))
        bar.update(xb.shape[0])
    bar.close()
    return torch.cat(results)


@torch.no_grad()
def active_units(model: HierarchicalVAE, x: torch.Tensor, *, threshold: float = 0.01,
                 batch_size: int = 500, draws: int = 16) -> list[torch.Tensor]:
    """Cov_x(E_q[z_l | x]) per unit of each layer, bottom first: [(d_l,)].

    E_q[z_l|x] averages the conditional means of q(z_l|...) over ``draws`` draws of what it
    conditions on (exact for q(z_1|x) bottom-up and q(z_L|x) top-down)."""
    means: list[list[torch.Tensor]] = [[] for _ in range(model.depth)]
    for xb in _batches(x, batch_size):
        for i, layer in enumerate(model.latents(xb, draws, _sample)):
            m = layer.q.mean
            means[i].append(m.mean(0) if m.dim() == 3 else m)  # (B, d_l)
    return [torch.cat(m).var(0) for m in means]


def layer_report(model: HierarchicalVAE, terms: dict[str, torch.Tensor],
                 variances: list[torch.Tensor], threshold: float,
                 mean_and_stderr: Callable[[torch.Tensor], tuple[float, float]]
                 ) -> dict[str, object]:
    """Per-layer KL (with stderr), active units and the collapse warnings of the report."""
    kl = [mean_and_stderr(terms[f"kl_layer{i + 1}"]) for i in range(model.depth)]
    active = [int((v > threshold).sum()) for v in variances]
    warnings = [w for i, (a, v) in enumerate(zip(active, variances, strict=True))
                if (w := layer_collapse_warning(i, a, v.numel(), threshold))]
    return {"latent_layers": list(model.sizes), "inference": model.inference,
            "model": model.describe(),
            "log_likelihood_of": "log p(x|y), labels given" if model.classes else "log p(x)",
            "kl_per_layer": [round(m, 6) for m, _ in kl],
            "kl_per_layer_stderr": [round(s, 6) for _, s in kl],
            "active_units_per_layer": active, "warnings": warnings}


def layer_collapse_warning(layer: int, active: int, total: int, threshold: float
                           ) -> str | None:
    """One line naming the layer (1 = bottom) when more than half its units are inactive."""
    if total == 0 or total - active <= COLLAPSE_FRACTION * total:
        return None
    return (f"posterior collapse in latent layer {layer + 1} (of size {total}): only {active} "
            f"units are active (Cov_x E[z_d|x] > {threshold}); try KL warm-up "
            "(objective.warmup_epochs), free bits (objective.free_bits, per layer) or a "
            "smaller layer in model.latent_layers")


@torch.no_grad()
def active_units_record(model: HierarchicalVAE, x: torch.Tensor, threshold: float
                        ) -> dict[str, int]:
    """``{"active_units_layer1": n_1, ...}`` over ``x``: for each epoch's metrics.jsonl."""
    was_training = model.training
    model.eval()
    variances = active_units(model, x, threshold=threshold)
    model.train(was_training)
    return {f"active_units_layer{i + 1}": int((v > threshold).sum())
            for i, v in enumerate(variances)}
