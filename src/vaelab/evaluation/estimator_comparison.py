"""Comparing gradient estimators at fixed parameters: which variants to measure, the
many-draw reference they are compared with, and the comparison as a table.

Each variant is one config's objective (built by ``build.build_objective``) measured with
``gradients.measure`` on one fixed batch; ``vaelab estimators`` runs it on a trained run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn

from vaelab.build import build_objective, evaluation_kl
from vaelab.config import BaselineName, EstimatorName, ObjectiveConfig
from vaelab.evaluation.gradients import fit_baseline, measure
from vaelab.inference.estimators import GumbelSoftmax, StraightThrough
from vaelab.schedules import Progress

CONTINUOUS_ESTIMATORS = ("pathwise", "score-function")
DISCRETE_ESTIMATORS = ("score-function", "gumbel-softmax", "straight-through")


@dataclass(frozen=True)
class Variant:
    """One estimator to measure: its name, its baseline (score-function only) and K."""

    estimator: str  # a name in inference.estimators.ESTIMATORS (checked by the caller)
    baseline: str = "none"  # a name in inference.baselines.BASELINES
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


def compare_estimators(model: nn.Module, base_cfg: ObjectiveConfig, x: torch.Tensor,
                       variant_list: list[Variant],
                       *, draws: int, reference_draws: int, baseline_steps: int = 300,
                       progress: Progress | None = None, seed: int = 0,
                       event_shape: tuple[int, ...] | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure each variant on the fixed batch ``x`` at the model's current parameters.

    ``base_cfg`` (an ObjectiveConfig) gives everything but the estimator, baseline and K.
    Baselines are first fitted for ``baseline_steps`` steps at fixed model parameters.
    Returns {"reference": row, "rows": [row, ...]}.
    """
    discrete = bool(getattr(model.posterior, "discrete", False))
    event_shape = event_shape or tuple(x.shape[1:])
    log = log or (lambda _: None)

    def objective_for(v: Variant):
        # a relaxed KL is only defined for the relaxed estimators; the others (and the
        # reference) use the discrete model's exact KL
        relaxed = v.estimator in (GumbelSoftmax.name, StraightThrough.name)
        kl = base_cfg.kl if relaxed else evaluation_kl(base_cfg)
        cfg = replace(base_cfg, estimator=cast(EstimatorName, v.estimator),
                      baseline=cast(BaselineName, v.baseline), samples=v.samples, kl=kl)
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
