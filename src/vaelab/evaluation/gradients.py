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
from collections.abc import Callable
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


# -- comparing estimators at fixed parameters ------------------------------------------------

CONTINUOUS_ESTIMATORS = ("pathwise", "score-function")
DISCRETE_ESTIMATORS = ("score-function", "gumbel-softmax", "straight-through")


@dataclass(frozen=True)
class Variant:
    """One estimator to measure: its name, its baseline (score-function only) and K."""

    estimator: str
    baseline: str = "none"
    samples: int = 1

    @property
    def label(self) -> str:
        return self.estimator if self.baseline == "none" else f"{self.estimator}+{self.baseline}"


def variants(discrete: bool, samples: int, estimators: list[str] | None = None,
             baselines: list[str] | None = None) -> list[Variant]:
    """Every (estimator, baseline) pair to compare; leave-one-out needs K >= 2 and gets
    K = max(K, 2) (its row says so)."""
    estimators = estimators or list(DISCRETE_ESTIMATORS if discrete else CONTINUOUS_ESTIMATORS)
    baselines = baselines or ["none", "moving-average", "nvil", "leave-one-out"]
    out = []
    for name in estimators:
        for baseline in (baselines if name == "score-function" else ["none"]):
            k = max(samples, 2) if baseline == "leave-one-out" else samples
            out.append(Variant(name, baseline, k))
    return out


def reference_variant(discrete: bool, samples: int) -> Variant:
    """The many-draw reference: pathwise where q has rsample, else REINFORCE with the
    leave-one-out baseline over K = max(K, 10) samples (both unbiased)."""
    if not discrete:
        return Variant("pathwise", "none", samples)
    return Variant("score-function", "leave-one-out", max(samples, 10))


def compare_estimators(model: nn.Module, base_cfg, x: torch.Tensor, variant_list: list[Variant],
                       *, draws: int, reference_draws: int, baseline_steps: int = 300,
                       progress: Progress | None = None, seed: int = 0,
                       event_shape: tuple[int, ...] | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure each variant on the fixed batch ``x`` at the model's current parameters.

    ``base_cfg`` (an ObjectiveConfig) gives everything but the estimator, baseline and K.
    Baselines are first fitted for ``baseline_steps`` steps at fixed model parameters.
    Returns {"reference": row, "rows": [row, ...]}.
    """
    from dataclasses import replace

    from vaelab.build import build_objective, evaluation_kl
    from vaelab.inference.estimators import GumbelSoftmax, StraightThrough

    discrete = bool(getattr(model.posterior, "discrete", False))
    event_shape = event_shape or tuple(x.shape[1:])
    log = log or (lambda _: None)

    def objective_for(v: Variant):
        # a relaxed KL is only defined for the relaxed estimators; the others (and the
        # reference) use the discrete model's exact KL
        relaxed = v.estimator in (GumbelSoftmax.name, StraightThrough.name)
        kl = base_cfg.kl if relaxed else evaluation_kl(base_cfg)
        cfg = replace(base_cfg, estimator=v.estimator, baseline=v.baseline, samples=v.samples,
                      kl=kl)
        return build_objective(cfg, event_shape, discrete=discrete).to(x.dtype)

    ref_v = reference_variant(discrete, base_cfg.samples)
    torch.manual_seed(seed)
    log(f"reference: {ref_v.label}, K={ref_v.samples}, {reference_draws} draws")
    ref_obj = objective_for(ref_v)
    fit_baseline(model, ref_obj, x, steps=baseline_steps, progress=progress)
    batches = min(10, draws, reference_draws)  # groups of draws for the bias estimate
    ref = measure(model, ref_obj, x, reference_draws, name=ref_v.label, progress=progress,
                  batches=batches)
    rows = []
    for i, v in enumerate(variant_list):
        torch.manual_seed(seed + 1 + i)
        log(f"{v.label}, K={v.samples}: {draws} draws")
        objective = objective_for(v)
        fitted = fit_baseline(model, objective, x, steps=baseline_steps, progress=progress)
        stats = measure(model, objective, x, draws, name=v.label, progress=progress,
                        batches=batches)
        row = stats.summary(ref)
        row.update({"baseline": v.baseline, "samples": v.samples, "baseline_fit_steps": fitted})
        rows.append(row)
    ref_row = ref.summary()
    ref_row.update({"baseline": ref_v.baseline, "samples": ref_v.samples})
    return {"reference": ref_row, "rows": rows}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table (variances are tr Cov of the loss gradient)."""
    head = ("| estimator | K | variance (total) | encoder | decoder | SNR encoder (median) | "
            "SNR decoder | relative bias | ms / estimate |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['samples']} | {r['variance_total']:.4g} | "
            f"{r['variance_encoder']:.4g} | {r['variance_decoder']:.4g} | "
            f"{r['snr_encoder']:.3f} | {r['snr_decoder']:.3f} | {bias_text(r)} | "
            f"{r['ms_per_estimate']:.1f} |")
    return "\n".join(lines)


def bias_text(row: dict[str, Any], group: str = "total") -> str:
    """The relative bias when it exceeds 3 standard errors, else an upper bound."""
    if f"relative_bias_{group}" not in row:
        return "-"
    if row[f"bias_significant_{group}"]:
        return f"{row[f'relative_bias_{group}']:.3f}"
    return f"< {row[f'relative_bias_upper_{group}']:.2g} (n.s.)"
