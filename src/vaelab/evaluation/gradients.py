"""Measuring gradient estimators at fixed parameters: variance, bias, SNR, cost.

Draw M independent estimates of the gradient of one objective on one fixed batch, keep
running per-coordinate means and variances (Welford, float64: memory is 3 x the number of
parameters, not M x), and summarise per parameter group (encoder phi / decoder theta):

* variance: the per-coordinate variance summed over coordinates, tr Cov[g];
* SNR: |E g_i| / std g_i per coordinate (Rainforth et al. 2018), its median and mean over
  coordinates;
* bias: the squared distance ||E g - E g_ref||^2 to a many-draw reference gradient,
  estimated without Monte Carlo floor from independent groups of draws (see
  ``GradientStats.bias_against``), with a jackknife standard error.

Nothing here touches ``.grad`` or the optimizer (gradients come from ``torch.autograd.grad``),
so it can run in the middle of training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab.schedules import Progress

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
def frozen(module: nn.Module | None) -> Iterator[None]:
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
    group_means: torch.Tensor | None = None  # (G, P): means of G disjoint groups of draws
    extra: dict[str, Any] = field(default_factory=dict)

    def _part(self, tensor: torch.Tensor, group: str) -> torch.Tensor:
        return tensor if group == "total" else tensor[self.slices[group]]

    def variance(self, group: str = "total") -> float:
        """tr Cov[g] over the group's coordinates."""
        return self._part(self.var, group).sum().item()

    def snr(self, group: str = "total", reduce: str = "median") -> float:
        """|E g_i| / std(g_i) over coordinates, reduced by median (robust: a few coordinates
        with an almost deterministic gradient, e.g. reached only by an analytic KL, can
        dominate) or mean (as in Rainforth et al. 2018). Coordinates with zero variance
        (unused parameters) are left out."""
        mean, var = self._part(self.mean, group), self._part(self.var, group)
        keep = var > 0
        if not keep.any():
            return math.nan
        ratio = mean[keep].abs() / var[keep].sqrt()
        return (ratio.median() if reduce == "median" else ratio.mean()).item()

    def norm(self, group: str = "total") -> float:
        return self._part(self.mean, group).norm().item()

    def bias_against(self, ref: GradientStats, group: str = "total") -> dict[str, Any]:
        """The squared bias ||E g - E g_ref||^2, without Monte Carlo floor.

        With G groups of draws on both sides, d_j = (group mean j) - (reference group mean
        j) are independent with E d_j = bias, so the U-statistic
        T = sum_{j != l} d_j . d_l / (G (G - 1)) is unbiased for ||bias||^2 whatever the
        gradient's covariance or tails; its standard error is the jackknife over groups.
        ``relative_bias`` = sqrt(max(T, 0)) / ||ref||; ``relative_bias_upper`` is the same
        at T + 3 standard errors; ``bias_significant`` means T > 3 standard errors. Also
        ``bias_sq`` = ||mean - ref||^2, which includes the noise.
        """
        diff = self._part(self.mean, group) - self._part(ref.mean, group)
        out: dict[str, Any] = {"bias_sq": diff.pow(2).sum().item()}
        ref_norm = ref.norm(group)

        def rel(value: float) -> float:
            return math.sqrt(max(value, 0.0)) / ref_norm if ref_norm > 0 else math.nan

        if self.group_means is None or ref.group_means is None \
                or self.group_means.shape[0] != ref.group_means.shape[0] \
                or self.group_means.shape[0] < 3:
            out.update({"squared_bias": math.nan, "squared_bias_se": math.nan,
                        "bias_significant": False, "relative_bias": math.nan,
                        "relative_bias_upper": math.nan})
            return out
        d = self._part(self.group_means.T, group).T - self._part(ref.group_means.T, group).T
        g = d.shape[0]
        total = d.sum(0)
        sq_each = d.pow(2).sum(1)  # (G,)
        ss, q = total.dot(total), sq_each.sum()
        t = ((ss - q) / (g * (g - 1))).item()
        # leave group j out: ||S - d_j||^2 - (Q - ||d_j||^2), over (G-1)(G-2) pairs
        t_minus = (ss - 2 * (d @ total) + sq_each - (q - sq_each)) / ((g - 1) * (g - 2))
        se = math.sqrt((g - 1) / g * (t_minus - t_minus.mean()).pow(2).sum().item())
        out.update({"squared_bias": t, "squared_bias_se": se,
                    "bias_significant": t > 3 * se, "relative_bias": rel(t),
                    "relative_bias_upper": rel(t + 3 * se)})
        return out

    def summary(self, ref: GradientStats | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"estimator": self.name, "draws": self.draws,
                               "ms_per_estimate": 1000 * self.seconds_per_draw, **self.extra}
        for group in ("total", *GROUPS):
            out[f"variance_{group}"] = self.variance(group)
            out[f"snr_{group}"] = self.snr(group)
            out[f"snr_mean_{group}"] = self.snr(group, reduce="mean")
            out[f"grad_norm_{group}"] = self.norm(group)
            if ref is not None:
                for key, value in self.bias_against(ref, group).items():
                    out[f"{key}_{group}"] = value
        return out


LossFn = Callable[[], torch.Tensor]


def draw_gradients(loss_fn: LossFn, groups: dict[str, list[nn.Parameter]], draws: int,
                   name: str = "", batches: int = 0) -> GradientStats:
    """M = ``draws`` independent gradients of ``loss_fn()`` w.r.t. the grouped parameters;
    ``batches`` >= 3 also keeps the means of that many disjoint groups of draws (for the
    bias estimate; memory ``batches`` x the parameter count)."""
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
    batches = min(batches, draws)
    sums = torch.zeros(batches, start, dtype=torch.float64) if batches >= 3 else None
    elapsed = 0.0
    for i in range(draws):
        t0 = time.perf_counter()
        g = flat_gradient(loss_fn(), params)
        elapsed += time.perf_counter() - t0
        delta = g - mean  # Welford's update
        mean += delta / (i + 1)
        m2 += delta * (g - mean)
        if sums is not None:
            sums[i * batches // draws] += g
    group_means = None
    if sums is not None:
        counts = torch.bincount(torch.arange(draws) * batches // draws, minlength=batches)
        group_means = sums / counts.unsqueeze(1).double()
    return GradientStats(name=name, draws=draws, mean=mean, var=m2 / (draws - 1),
                         slices=slices, seconds_per_draw=elapsed / draws,
                         group_means=group_means)


def objective_loss_fn(model: nn.Module, objective: Callable, x: torch.Tensor,
                      progress: Progress | None = None) -> LossFn:
    """A closure computing ``objective(model, x, progress).loss`` (one fresh draw of z)."""
    progress = progress or Progress(step=0, epoch=0.0)
    return lambda: objective(model, x, progress).loss


def measure(model: nn.Module, objective: Callable, x: torch.Tensor, draws: int,
            name: str = "", progress: Progress | None = None,
            batches: int = 0) -> GradientStats:
    """Gradient statistics of ``objective`` on the fixed batch ``x`` at the current
    parameters; the objective is in evaluation mode (baselines frozen) meanwhile."""
    with frozen(objective if isinstance(objective, nn.Module) else None):
        return draw_gradients(objective_loss_fn(model, objective, x, progress),
                              parameter_groups(model), draws, name=name, batches=batches)


def fit_baseline(model: nn.Module, objective: nn.Module, x: torch.Tensor, steps: int = 200,
                 lr: float = 1e-3, progress: Progress | None = None) -> int:
    """Train only the objective's own parameters and statistics (a baseline) on ``x`` at
    fixed model parameters, so estimators are compared with fitted baselines. Returns the
    number of steps taken (0 when there is nothing to fit)."""
    if not any(b.numel() for b in objective.buffers()) and \
            not any(p.numel() for p in objective.parameters()):
        return 0
    params = list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    progress = progress or Progress(step=0, epoch=0.0)
    was = objective.training
    objective.train()
    try:
        for _ in range(steps):
            if optimizer is None:  # running statistics only
                with torch.no_grad():
                    objective(model, x, progress)
                continue
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
