"""Honest evaluation: ELBO, importance-sampled log-likelihood, KL, active units.

All numbers are nats per datapoint (sum over data elements, mean over datapoints) with the
standard error of the mean over datapoints. Discrete latents are evaluated with the
discrete model (hard samples, exact KL). Work is chunked over datapoints and importance
samples so K=5000 over 10k images runs in bounded memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaelab import console
from vaelab.evaluation import layered
from vaelab.evaluation.chunked import chunked_log_mean_exp
from vaelab.evaluation.diagnostics import collapse_warning, kl_per_dimension
from vaelab.evaluation.fused_weights import decoder_log_prob, decoder_plan, fused_log_weights
from vaelab.inference.fused_elbo import fused_plan
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.kl import kl_term
from vaelab.models.vae import VAE

# how every reported number is reduced over data elements and datapoints
REDUCTION = ("nats per datapoint: log-densities summed over data elements and latent "
             "dimensions, averaged over datapoints")


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size]


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    n = values.numel()
    stderr = values.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), stderr


@torch.no_grad()
def elbo_terms(model: VAE, x: torch.Tensor, *, samples: int = 1, kl: str = "auto",
               batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per-datapoint ELBO, reconstruction term and KL, (N,) each, with K samples of z
    (hierarchical models: also each layer's KL, ``kl_layer1``...)."""
    if isinstance(model, HierarchicalVAE):
        return layered.elbo_terms(model, x, samples=samples, kl=kl, batch_size=batch_size)
    out: dict[str, list[torch.Tensor]] = {"elbo": [], "rec": [], "kl": []}
    for xb in _batches(x, batch_size):
        q = model.encode(xb)
        z = q.sample((samples,))
        rec = model.decode(z).log_prob(xb).mean(0)
        kl_value = kl_term(q, model.prior(), z=z, mode=kl)
        out["elbo"].append(rec - kl_value)
        out["rec"].append(rec)
        out["kl"].append(kl_value)
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def importance_log_likelihood(model: VAE, x: torch.Tensor, *, samples: int = 5000,
                              batch_size: int = 20, sample_chunk: int = 250,
                              progress: bool = False, fused: bool = True) -> torch.Tensor:
    """log p(x) ~ logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x): (N,).

    A stochastic lower bound in expectation (the IWAE bound) that tightens as K grows and is
    consistent as K -> infinity (Burda et al. 2016). Hierarchical models: z is the joint
    latent (``evaluation/layered.py``). ``fused``: the MLP Gaussian-Bernoulli VAE's weights
    without distribution objects, and for other latents and priors with that decoder its
    log p(x|z) (``evaluation/fused_weights.py``; same draws and values).
    """
    if isinstance(model, HierarchicalVAE):
        return layered.importance_log_likelihood(model, x, samples=samples,
                                                 batch_size=batch_size,
                                                 sample_chunk=sample_chunk, progress=progress,
                                                 fused=fused)
    results = []
    bar = console.progress(x.shape[0], f"log p(x), K={samples}", enabled=progress,
                           log_lines=True)
    plan = fused_plan(model) if fused else None  # the MLP Gaussian-Bernoulli VAE
    decoder = decoder_plan(model) if fused and plan is None else None  # its decoder, other q, p(z)
    for xb in _batches(x, batch_size):
        q = model.encode(xb)
        prior = model.prior()

        def log_w(k: int, xb: torch.Tensor = xb, q: Any = q, prior: Any = prior) -> torch.Tensor:
            if plan is not None:  # the same draws and weights, fewer passes over the logits
                return fused_log_weights(plan, xb, k, q.base_dist.loc, q.base_dist.scale)
            z = q.sample((k,))  # (k, B, *latent)
            rec = decoder_log_prob(decoder, model, z, xb) if decoder is not None \
                else model.decode(z).log_prob(xb)
            return rec + prior.log_prob(z) - q.log_prob(z)

        results.append(chunked_log_mean_exp(log_w, samples, sample_chunk))
        bar.update(xb.shape[0])
    bar.close()
    return torch.cat(results)



@torch.no_grad()
def active_units(model: VAE, x: torch.Tensor, *, threshold: float = 0.01,
                 batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """Burda et al. 2016: unit d is active when Cov_x(E_q[z_d | x]) > threshold.

    A categorical variable (N, C) is one unit: its variance is the trace of the covariance
    of its class probabilities, sum_c Var_x(q(z_n = c | x)).
    """
    means = torch.cat([model.encode(xb).mean for xb in _batches(x, batch_size)])
    variances = means.var(0)  # (*latent_shape)
    variances = variances.sum(-1) if len(model.latent_shape) == 2 else variances.flatten()
    return int((variances > threshold).sum()), variances


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, *, iw_samples: int = 1000, batch_size: int = 20,
             sample_chunk: int = 250, active_threshold: float = 0.01, kl: str = "auto",
             progress: bool = False) -> dict[str, Any]:
    """The evaluation report; field names are stable (see README, "Evaluation JSON")."""
    was_training = model.training
    model.eval()
    terms = elbo_terms(model, x, kl=kl)
    report: dict[str, Any] = {"n": int(x.shape[0])}
    for key in ("elbo", "rec", "kl"):
        report[key], report[f"{key}_stderr"] = mean_and_stderr(terms[key])
    if iw_samples > 0:
        ll = importance_log_likelihood(model, x, samples=iw_samples, batch_size=batch_size,
                                       sample_chunk=sample_chunk, progress=progress)
        report["log_likelihood"], report["log_likelihood_stderr"] = mean_and_stderr(ll)
        report["nll"] = -report["log_likelihood"]
        report["iw_samples"] = iw_samples
    layers = None
    if isinstance(model, HierarchicalVAE):
        per_layer = layered.active_units(model, x, threshold=active_threshold)
        layers = layered.layer_report(model, terms, per_layer, active_threshold,
                                      mean_and_stderr)
        variances = torch.cat(per_layer)
        count = int((variances > active_threshold).sum())
    else:
        count, variances = active_units(model, x, threshold=active_threshold)
    report["active_units"] = count
    report["latent_units"] = int(variances.numel())
    report["unit_variances"] = [round(v, 6) for v in variances.tolist()]
    if getattr(model.likelihood, "discrete", False) and "nll" in report:
        # a probability mass over data values: -log2 P(x) per data element is a code length
        report["bits_per_dim"] = report["nll"] / (math.prod(model.event_shape) * math.log(2))
    split = None if layers is not None else kl_per_dimension(model, x)
    report["kl_per_dim"] = None if split is None else [round(v, 6) for v in split[0].tolist()]
    report["kl_per_dim_stderr"] = None if split is None \
        else [round(v, 6) for v in split[1].tolist()]
    report["kl_per_dim_kind"] = "undefined" if split is None else split[2]
    collapse = collapse_warning(count, report["latent_units"], active_threshold)
    report["warnings"] = [collapse] if collapse else []
    if layers is not None:  # per-layer KL and active units; collapse warnings name the layer
        report["warnings"] = layers.pop("warnings")
        report.update(layers)
    model.train(was_training)
    return report
