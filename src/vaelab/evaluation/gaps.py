"""The amortization and approximation gaps of a trained model (Cremer et al. 2018).

For each datapoint of a test subset:

    amortized ELBO   L[q_phi]   q from the encoder
    optimised ELBO   L[q*]      q refined by black-box VI from the encoder's output
    log-likelihood   log p(x)   importance sampling with q* as the proposal

amortization gap = L[q*] - L[q_phi] (what sharing one encoder costs), approximation gap =
log p(x) - L[q*] (what the variational family costs). Each is a mean of per-datapoint
differences with its standard error. BBVI from the prior on the same points measures how
much work the encoder saves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from vaelab.build import bbvi_estimator
from vaelab.evaluation.evaluate import elbo_terms, importance_log_likelihood, mean_and_stderr
from vaelab.inference.refine import (
    BBVI_LR,
    BBVI_LR_FINAL,
    BBVI_STEPS,
    RefinementError,
    bbvi_samples,
    check_table_family,
    encoder_init,
    refine_dataset,
    with_params,
)
from vaelab.models.vae import VAE


def _stat(values: torch.Tensor) -> dict[str, float]:
    mean, stderr = mean_and_stderr(values)
    return {"mean": mean, "stderr": stderr}


def monotonicity(trace: torch.Tensor, block: int = 20, z: float = 4.0) -> dict[str, Any]:
    """Is the mean ELBO non-decreasing over steps, within noise?

    trace (T, N): per-datapoint bound per step. Steps are grouped in blocks of ``block``;
    each block's mean over steps and datapoints is compared with the previous block's, the
    drop's standard error coming from the per-datapoint block means (paired).
    """
    t = trace.shape[0] // block * block
    if t < 2 * block:
        return {"monotone_within_noise": True, "largest_drop": 0.0, "drop_stderr": 0.0,
                "block": block}
    blocks = trace[:t].double().reshape(-1, block, trace.shape[1]).mean(1)  # (T/block, N)
    diffs = blocks[1:] - blocks[:-1]  # (T/block - 1, N)
    drops = -diffs.mean(1)
    stderr = diffs.std(1) / math.sqrt(diffs.shape[1])
    worst = int(drops.argmax())
    return {"monotone_within_noise": bool((drops <= z * stderr).all()),
            "largest_drop": float(drops[worst]), "drop_stderr": float(stderr[worst]),
            "block": block}


def smooth(curve: torch.Tensor, window: int) -> torch.Tensor:
    """Trailing moving average (T,) -> (T,): the mean over the last ``window`` steps."""
    c = torch.cat([curve.new_zeros(1), curve.double().cumsum(0)])
    idx = torch.arange(1, curve.numel() + 1)
    lo = (idx - window).clamp_min(0)
    return (c[idx] - c[lo]) / (idx - lo)


def measure(model: VAE, x: torch.Tensor, *, steps: int = BBVI_STEPS, lr: float = BBVI_LR,
            lr_final: float = BBVI_LR_FINAL, samples: int | None = None, eval_samples: int = 100,
            iw_samples: int = 1000, batch_size: int = 500, from_prior: bool = True,
            progress: bool = False) -> dict[str, Any]:
    """The gap report for the datapoints x (N, *event); see the module docstring."""
    samples = bbvi_samples(check_table_family(model.posterior), samples)
    if steps < 1:
        raise RefinementError(f"--steps must be at least 1, got {steps}")
    estimator = bbvi_estimator(model.posterior, samples)
    with frozen(model):  # the decoder is fixed; only lambda is optimised
        return _measure(model, x, steps, lr, lr_final, samples, eval_samples, iw_samples,
                        batch_size, from_prior, progress, estimator)


@contextmanager
def frozen(model: VAE) -> Iterator[VAE]:
    """The model in eval mode with no parameter requiring grad; restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(training)


def _measure(model, x, steps, lr, lr_final, samples, eval_samples, iw_samples, batch_size,
             from_prior, progress, estimator) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    lam0 = encoder_init(model, x, batch_size=batch_size)
    amortized = elbo_at(model, x, lam0, samples=eval_samples, batch_size=batch_size)["elbo"]
    seconds["amortized"] = time.perf_counter() - start

    start = time.perf_counter()
    enc = refine_dataset(model, x, lam0, steps=steps, lr=lr, lr_final=lr_final,
                         samples=samples, batch_size=batch_size, progress=progress,
                         estimator=estimator)
    optimised = elbo_at(model, x, enc.params, samples=eval_samples,
                        batch_size=batch_size)["elbo"]
    seconds["refine_from_encoder"] = time.perf_counter() - start

    report: dict[str, Any] = {"n": int(x.shape[0])}
    curves = {"encoder": enc.trace.double().mean(1)}
    if from_prior:
        start = time.perf_counter()
        pri = refine_dataset(model, x, "prior", steps=steps, lr=lr, lr_final=lr_final,
                             samples=samples, batch_size=batch_size, progress=progress,
                         estimator=estimator)
        from_prior_elbo = elbo_at(model, x, pri.params, samples=eval_samples,
                                  batch_size=batch_size)["elbo"]
        seconds["refine_from_prior"] = time.perf_counter() - start
        curves["prior"] = pri.trace.double().mean(1)
        report["optimised_from_prior_elbo"] = _stat(from_prior_elbo)

    log_px = None
    if iw_samples > 0:
        start = time.perf_counter()
        log_px = log_likelihood_at(model, x, enc.params, samples=iw_samples,
                                   batch_size=min(batch_size, 100))
        seconds["log_likelihood"] = time.perf_counter() - start

    report["amortized_elbo"] = _stat(amortized)
    report["optimised_elbo"] = _stat(optimised)
    report["amortization_gap"] = _stat(optimised - amortized)
    if log_px is not None:
        report["log_likelihood"] = _stat(log_px)
        report["approximation_gap"] = _stat(log_px - optimised)
        report["inference_gap"] = _stat(log_px - amortized)
    report["monotone_from_encoder"] = monotonicity(enc.trace)

    window = max(1, min(25, steps // 10))
    gap = report["amortization_gap"]["mean"]
    base = report["amortized_elbo"]["mean"]
    targets = {"amortized_elbo": base, "half_gap": base + 0.5 * gap,
               "ninety_percent_gap": base + 0.9 * gap}
    report["steps_to_reach"] = {
        "smoothing_window": window,
        "targets": targets,
        **{init: {name: steps_to_reach(smooth(curve, window), value)
                  for name, value in targets.items()} for init, curve in curves.items()}}
    report["curves"] = {k: [round(v, 4) for v in c.tolist()] for k, c in curves.items()}
    report["settings"] = {
        "steps": steps, "lr": lr, "lr_final": lr_final, "optimizer": "adam, cosine schedule",
        "gradient_samples": samples, "eval_samples": eval_samples, "iw_samples": iw_samples,
        "log_likelihood_proposal": "q refined from the encoder",
        "note": "ELBO values are Monte Carlo estimates with eval_samples draws; gaps are "
                "means of per-datapoint differences, standard errors over datapoints"}
    report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return report


@torch.no_grad()
def elbo_at(model: VAE, x: torch.Tensor, params: torch.Tensor, *, samples: int = 100,
            kl: str = "auto", batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per-datapoint ELBO, rec and KL (N,) with q(z|x_i) = family(params[i])."""
    parts = [elbo_terms(with_params(model, params[i:i + batch_size]), x[i:i + batch_size],
                        samples=samples, kl=kl, batch_size=batch_size)
             for i in range(0, x.shape[0], batch_size)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def log_likelihood_at(model: VAE, x: torch.Tensor, params: torch.Tensor, *, samples: int,
                      batch_size: int = 100, sample_chunk: int = 500) -> torch.Tensor:
    """Importance-sampled log p(x) (N,) with proposal q(z|x_i) = family(params[i])."""
    return torch.cat([
        importance_log_likelihood(with_params(model, params[i:i + batch_size]),
                                  x[i:i + batch_size], samples=samples,
                                  batch_size=batch_size, sample_chunk=sample_chunk)
        for i in range(0, x.shape[0], batch_size)])


def steps_to_reach(curve: torch.Tensor, target: float) -> int | None:
    """First index where ``curve`` (T,) is >= target, or None if it never is."""
    hits = (curve >= target).nonzero()
    return int(hits[0]) if hits.numel() else None

