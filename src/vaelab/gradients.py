"""Measuring gradient estimators at fixed parameters: variance, bias, SNR, cost.

Draw M independent estimates of the gradient of one objective on one fixed batch, keep
running per-coordinate means and variances (Welford, float64: memory is 3 x the number of
parameters, not M x), and summarise per parameter group (encoder phi / decoder theta):

* variance: the per-coordinate variance summed over coordinates, tr Cov[g];
* SNR: |E g_i| / std g_i averaged over coordinates (Rainforth et al. 2018);
* bias: ||mean - reference||^2 against a many-draw reference gradient, reported with the
  value it would have if both were unbiased (the Monte Carlo noise floor
  tr Cov/M + tr Cov_ref/M_ref), so "bias minus floor" estimates the squared true bias.

Nothing here touches ``.grad`` or the optimizer (gradients come from ``torch.autograd.grad``),
so it can run in the middle of training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab.train import Progress

GROUPS = ("encoder", "decoder")


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """phi (encoder + posterior head) and theta (everything else: decoder, likelihood,
    prior); a parameter shared by both (a VampPrior reuses the encoder) counts as phi."""
    encoder_modules = [getattr(model, name) for name in ("encoder", "posterior")
                       if hasattr(model, name)]
    phi = [p for m in encoder_modules for p in m.parameters() if p.requires_grad]
    seen = {id(p) for p in phi}
    theta = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return {"encoder": phi, "decoder": theta}


@contextmanager
def frozen(module: nn.Module | None):
    """Evaluation mode for ``module`` (baselines stop updating running statistics)."""
    if module is None:
        yield
        return
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def flat_gradient(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """d loss / d params as one flat float64 vector (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double()
                      for p, g in zip(params, grads, strict=True)])


@dataclass
class GradientStats:
    """Per-coordinate mean and variance of M gradient draws, with group boundaries."""

    name: str
    draws: int
    mean: torch.Tensor  # (P,) float64
    var: torch.Tensor  # (P,) float64, unbiased per-coordinate variance
    slices: dict[str, slice]
    seconds_per_draw: float
    extra: dict[str, Any] = field(default_factory=dict)

    def _part(self, tensor: torch.Tensor, group: str) -> torch.Tensor:
        return tensor if group == "total" else tensor[self.slices[group]]

    def variance(self, group: str = "total") -> float:
        """tr Cov[g] over the group's coordinates."""
        return self._part(self.var, group).sum().item()

    def snr(self, group: str = "total") -> float:
        """Mean over coordinates of |E g_i| / std(g_i) (coordinates with zero variance and
        zero mean, e.g. unused parameters, are left out)."""
        mean, var = self._part(self.mean, group), self._part(self.var, group)
        keep = var > 0
        if not keep.any():
            return math.nan
        return (mean[keep].abs() / var[keep].sqrt()).mean().item()

    def norm(self, group: str = "total") -> float:
        return self._part(self.mean, group).norm().item()

    def bias_against(self, ref: GradientStats, group: str = "total") -> dict[str, float]:
        """||mean - ref||^2, its noise floor if both were unbiased, and the relative bias."""
        diff = self._part(self.mean, group) - self._part(ref.mean, group)
        sq = diff.pow(2).sum().item()
        floor = self.variance(group) / self.draws + ref.variance(group) / ref.draws
        ref_norm = ref.norm(group)
        excess = max(sq - floor, 0.0)
        return {"bias_sq": sq, "noise_floor": floor,
                "relative_bias": math.sqrt(excess) / ref_norm if ref_norm > 0 else math.nan}

    def summary(self, ref: GradientStats | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"estimator": self.name, "draws": self.draws,
                               "ms_per_estimate": 1000 * self.seconds_per_draw, **self.extra}
        for group in ("total", *GROUPS):
            out[f"variance_{group}"] = self.variance(group)
            out[f"snr_{group}"] = self.snr(group)
            out[f"grad_norm_{group}"] = self.norm(group)
            if ref is not None:
                bias = self.bias_against(ref, group)
                out[f"bias_sq_{group}"] = bias["bias_sq"]
                out[f"noise_floor_{group}"] = bias["noise_floor"]
                out[f"relative_bias_{group}"] = bias["relative_bias"]
        return out


LossFn = Callable[[], torch.Tensor]


def draw_gradients(loss_fn: LossFn, groups: dict[str, list[nn.Parameter]], draws: int,
                   name: str = "") -> GradientStats:
    """M = ``draws`` independent gradients of ``loss_fn()`` w.r.t. the grouped parameters."""
    if draws < 2:
        raise ValueError(f"need at least 2 gradient draws to estimate a variance, got {draws}")
    params = [p for group in GROUPS for p in groups[group]]
    slices, start = {}, 0
    for group in GROUPS:
        size = sum(p.numel() for p in groups[group])
        slices[group] = slice(start, start + size)
        start += size
    mean = torch.zeros(start, dtype=torch.float64)
    m2 = torch.zeros(start, dtype=torch.float64)
    elapsed = 0.0
    for i in range(draws):
        t0 = time.perf_counter()
        g = flat_gradient(loss_fn(), params)
        elapsed += time.perf_counter() - t0
        delta = g - mean  # Welford's update
        mean += delta / (i + 1)
        m2 += delta * (g - mean)
    return GradientStats(name=name, draws=draws, mean=mean, var=m2 / (draws - 1),
                         slices=slices, seconds_per_draw=elapsed / draws)


def objective_loss_fn(model: nn.Module, objective: Callable, x: torch.Tensor,
                      progress: Progress | None = None) -> LossFn:
    """A closure computing ``objective(model, x, progress).loss`` (one fresh draw of z)."""
    progress = progress or Progress(step=0, epoch=0.0)
    return lambda: objective(model, x, progress).loss


def measure(model: nn.Module, objective: Callable, x: torch.Tensor, draws: int,
            name: str = "", progress: Progress | None = None) -> GradientStats:
    """Gradient statistics of ``objective`` on the fixed batch ``x`` at the current
    parameters; the objective is in evaluation mode (baselines frozen) meanwhile."""
    with frozen(objective if isinstance(objective, nn.Module) else None):
        return draw_gradients(objective_loss_fn(model, objective, x, progress),
                              parameter_groups(model), draws, name=name)


def fit_baseline(model: nn.Module, objective: nn.Module, x: torch.Tensor, steps: int = 200,
                 lr: float = 1e-3) -> int:
    """Train only the objective's own parameters and statistics (a baseline) on ``x`` at
    fixed model parameters, so estimators are compared with fitted baselines. Returns the
    number of steps taken (0 when there is nothing to fit)."""
    if not any(b.numel() for b in objective.buffers()) and \
            not any(p.numel() for p in objective.parameters()):
        return 0
    params = list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    progress = Progress(step=0, epoch=0.0)
    was = objective.training
    objective.train()
    try:
        for _ in range(steps):
            loss = objective(model, x, progress).loss
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optimizer.step()
    finally:
        objective.train(was)
    return steps


def variance_record(stats: GradientStats, step: int) -> dict[str, Any]:
    """One training-time measurement, as logged in metrics.jsonl."""
    return {"step": step, "grad_variance_total": stats.variance("total"),
            "grad_variance_encoder": stats.variance("encoder"),
            "grad_variance_decoder": stats.variance("decoder"),
            "grad_snr_total": stats.snr("total"), "grad_draws": stats.draws}


def variance_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training-time measurements from a run's metrics.jsonl records, in step order."""
    rows = [row for record in records for row in record.get("step_records", [])
            if "grad_variance_total" in row]
    return sorted(rows, key=lambda row: row["step"])
