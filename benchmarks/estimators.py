"""Gradient estimators on binarized MNIST: final test ELBO and gradient variance over training.

Gaussian latents (the default 784-512-20 model): pathwise vs score-function with no
baseline, a moving average, NVIL and leave-one-out. 20 x 10 categorical latents (the
discrete-categorical config): REINFORCE with the same baselines vs Gumbel-softmax vs
straight-through. Every run logs tr Cov of the gradient (encoder and decoder) every N steps
(train.grad_variance_every), from D draws on the current batch.

    python benchmarks/estimators.py --epochs 1 --every 50 --tag short    # the short version
    python benchmarks/estimators.py --epochs 100 --every 500 --threads 1 --k 0 --tag full
                                                        # the documented comparison, ~80 min
    python benchmarks/estimators.py --only gaussian --epochs 5

Writes benchmarks/results/estimators-<tag>.json / .md and docs/figures/estimators-<tag>.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
FIGURES = ROOT / "docs" / "figures"

FAMILIES = {
    "gaussian": ("configs/default.toml", "Gaussian, 20 dims"),
    "categorical": ("configs/discrete-categorical.toml", "categorical, 20 x 10"),
}
BASELINES = ("none", "moving-average", "nvil", "leave-one-out")
COLOURS = {"pathwise": "tab:blue", "score-function": "tab:red",
           "score-function+moving-average": "tab:orange", "score-function+nvil": "tab:green",
           "score-function+leave-one-out": "tab:purple", "gumbel-softmax": "tab:cyan",
           "straight-through": "tab:brown"}


def variants(family: str) -> list[tuple[str, str]]:
    """(estimator, baseline) pairs for a latent family."""
    sf = [("score-function", b) for b in BASELINES]
    if family == "gaussian":
        return [("pathwise", "none"), *sf]
    return [*sf, ("gumbel-softmax", "none"), ("straight-through", "none")]


def label(estimator: str, baseline: str) -> str:
    return estimator if baseline == "none" else f"{estimator}+{baseline}"


def train(family: str, estimator: str, baseline: str, args: argparse.Namespace) -> dict:
    config, what = FAMILIES[family]
    name = f"{family}-{label(estimator, baseline)}"
    out = Path(args.out_dir) / name
    samples = 2 if baseline == "leave-one-out" else 1
    sets = [f"objective.estimator={estimator}", f"objective.baseline={baseline}",
            f"objective.samples={samples}", f"train.epochs={args.epochs}",
            f"train.grad_variance_every={args.every}", f"train.grad_variance_draws={args.draws}",
            f"train.threads={args.threads}", f"eval.iw_samples={args.k}",
            "train.max_bad_steps=50", *args.overrides]
    command = [sys.executable, "-m", "vaelab", "train", "-c", str(ROOT / config),
               "--out", str(out), "--overwrite", "--no-progress"]
    for item in sets:
        command += ["--set", item]
    shown = " ".join("python" if c == sys.executable else c for c in command).replace(
        f"{ROOT}/", "")  # commands as run from the repo root
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    row = {"family": family, "what": what, "estimator": estimator, "baseline": baseline,
           "label": label(estimator, baseline), "samples": samples, "command": shown,
           "run": str(out), "wall_seconds": round(time.perf_counter() - start, 1)}
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"  failed: {row['error']}", flush=True)
        return row
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = summary["test"]
    curve = [r for rec in records for r in rec.get("step_records", [])]
    row.update({
        **checkpoint_epoch(records),
        "epochs": summary["epochs"], "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "test_elbo": test["elbo"], "test_elbo_stderr": test["elbo_stderr"],
        "test_nll": test.get("nll"), "iw_samples": test.get("iw_samples"),
        "stop_reason": summary["stop_reason"],
        "grad_variance": [{k: r[k] for k in ("step", "grad_variance_total",
                                             "grad_variance_encoder", "grad_variance_decoder")}
                          for r in curve],
    })
    print(f"  test ELBO {test['elbo']:.2f} in {summary['train_seconds']:.0f} s", flush=True)
    return row


def checkpoint_epoch(records: list[dict]) -> dict:
    """Which epoch's checkpoint the test numbers are from (the best validation bound; the
    last epoch when there is no validation split), and the worst bound seen after it, which
    shows a run that diverged later."""
    key = "val_bound" if any("val_bound" in r for r in records) else "train_bound"
    best = max(records, key=lambda r: r[key]) if key == "val_bound" else records[-1]
    later = [r[key] for r in records if r["epoch"] >= best["epoch"]]
    return {"checkpoint_epoch": best["epoch"], "bound_key": key,
            "worst_bound_after_checkpoint": min(later)}


def geometric_mean(values: list[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def markdown(rows: list[dict]) -> str:
    lines = ["| latents | estimator | K | epochs | test ELBO | checkpoint epoch | encoder grad "
             "variance (geo. mean over training) | decoder grad variance | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['what']} | {r['label']} | {r['samples']} | - | failed: "
                         f"{r['error']} | - | - | - | - |")
            continue
        enc = geometric_mean([g["grad_variance_encoder"] for g in r["grad_variance"]])
        dec = geometric_mean([g["grad_variance_decoder"] for g in r["grad_variance"]])
        lines.append(f"| {r['what']} | {r['label']} | {r['samples']} | {r['epochs']} | "
                     f"{r['test_elbo']:.2f} ± {r['test_elbo_stderr']:.2f} | "
                     f"{r.get('checkpoint_epoch', '-')} | {enc:.3g} | "
                     f"{dec:.3g} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from vaelab.viz.plots import plt, save_figure

    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.4),
                             squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for r in rows:
            if r["family"] != family or "error" in r or not r["grad_variance"]:
                continue
            steps = [g["step"] for g in r["grad_variance"]]
            enc = [g["grad_variance_encoder"] for g in r["grad_variance"]]
            ax.plot(steps, enc, marker=".", color=COLOURS.get(r["label"]),
                    label=f"{r['label']}, K={r['samples']} (ELBO {r['test_elbo']:.1f})")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("tr Cov of the encoder gradient")
        ax.set_title(f"{FAMILIES[family][1]} latents")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--every", type=int, default=100,
                        help="measure the gradient variance every N steps")
    parser.add_argument("--draws", type=int, default=10, help="gradient draws per measurement")
    parser.add_argument("--k", type=int, default=0,
                        help="importance samples for the test NLL (0 = ELBO only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=list(FAMILIES), action="append")
    parser.add_argument("--variants", help="comma list of labels to run, e.g. pathwise,"
                                           "score-function+nvil")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out-dir", default="runs/estimators")
    parser.add_argument("--tag", default="full")
    parser.add_argument("--replot", action="store_true",
                        help="only redo the table and plot from results/estimators-<tag>.json")
    args = parser.parse_args()
    wanted = set(args.variants.split(",")) if args.variants else None
    stem = f"estimators-{args.tag}"
    rows = json.loads((RESULTS / f"{stem}.json").read_text()) if args.replot else []
    for family in [] if args.replot else args.only or list(FAMILIES):
        for estimator, baseline in variants(family):
            if wanted and label(estimator, baseline) not in wanted:
                continue
            rows.append(train(family, estimator, baseline, args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    plot(rows, FIGURES / f"{stem}.png")
    print(table)
    print(f"wrote {RESULTS / (stem + '.json')}, {RESULTS / (stem + '.md')}, "
          f"{FIGURES / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
