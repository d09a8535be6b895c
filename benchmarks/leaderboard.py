"""One leaderboard for every model class, trained under the same time budget and data protocol.

    python benchmarks/leaderboard.py --minutes 150              # the full table (hours)
    python benchmarks/leaderboard.py --minutes 3 --only vae,topdown --k 1000 --limit 1000 \\
        --threads 1 --tag short                                 # a short version

Each row trains one model class on MNIST (train+valid, 60k images, dynamic binarization)
for ``--minutes`` of training (``train.time_limit_minutes``: the epoch that crosses the
budget finishes), then evaluates the test split with K importance samples (the fixed seeded
binarization of the evaluator): epochs, training wall time, test NLL with its standard
error. Conditional rows report -log p(x|y) (labels given), which is not comparable with
-log p(x); the table says so. Writes benchmarks/results/leaderboard[-TAG].json and
docs/leaderboard[-TAG].md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vaelab.api import fit
from vaelab.config import load_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"

# name: (config, overrides, description)
ROWS: dict[str, tuple[str, list[str], str]] = {
    "vae": ("paper-vae.toml", [], "one layer (50), ELBO"),
    "vamp": ("paper-vamp.toml", [], "one layer (50) + VampPrior, ELBO"),
    "iwae": ("paper-iwae5.toml", [], "one layer (50), IWAE K=5"),
    "bottomup": ("hierarchical.toml", ["model.inference=bottom-up"],
                 "two layers (100, 50), bottom-up, IWAE K=5"),
    "topdown": ("hierarchical.toml", [], "two layers (100, 50), top-down ladder, IWAE K=5"),
    "conditional": ("paper-vae.toml", ["model.conditional=true"],
                    "one layer (50) given the label, ELBO: -log p(x|y)"),
}

ANCHORS = [
    ("VAE, 2 stochastic layers (IWAE paper, Burda et al. 2016)", "85.33"),
    ("IWAE K=50, 2 stochastic layers (IWAE paper)", "82.90"),
    ("VampPrior hierarchical VAE, MLP (Tomczak & Welling 2018)", "83.19"),
    ("LVAE, 5 layers (Sonderby et al. 2016)", "81.74"),
    ("NVAE, deep conv hierarchy (Vahdat & Kautz 2020)", "~78.0"),
]


def run_row(name: str, args: argparse.Namespace) -> dict:
    config_name, extra, description = ROWS[name]
    overrides = [*extra, "train.progress=false", "eval.iw_samples=0",
                 f"train.time_limit_minutes={args.minutes}", f"train.threads={args.threads}"]
    config = load_config(ROOT / "configs" / config_name, overrides)
    out = Path(args.runs) / f"leaderboard-{name}"
    start = time.perf_counter()
    run = fit(config, out=out, overwrite=True, pictures=False)
    train_wall = time.perf_counter() - start
    summary = json.loads((run.path / "summary.json").read_text())
    start = time.perf_counter()
    torch.manual_seed(0)
    test = run.evaluate("test", iw_samples=args.k, limit=args.limit)
    return {
        "row": name, "model": description, "config": f"configs/{config_name}",
        "overrides": extra, "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"], "wall_seconds": round(train_wall, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "test_nll": round(test["nll"], 3),
        "test_nll_stderr": round(test["log_likelihood_stderr"], 3),
        "iw_samples": args.k, "test_n": test["n"],
        "given_labels": bool(config.model.conditional),
        "kl_per_layer": test.get("kl_per_layer"),
        "active_units": test["active_units"], "latent_units": test["latent_units"],
    }


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"| model | config | epochs | training (min) | test NLL (K={args.k}) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        nll = f"{r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f}"
        if r["given_labels"]:
            nll += " (-log p(x\\|y))"
        over = " ".join(f"`--set {o}`" for o in r["overrides"])
        lines.append(f"| {r['model']} | `{r['config']}` {over} | {r['epochs']} | "
                     f"{r['train_seconds'] / 60:.1f} | {nll} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True,
                        help="training budget per row (train.time_limit_minutes)")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--k", type=int, default=5000, help="importance samples at test")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate on the first N test images only (short versions)")
    parser.add_argument("--threads", type=int, default=2, help="train.threads of every row")
    parser.add_argument("--runs", default="runs", help="folder for the run folders")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    rows = []
    for name in names:
        rows.append(run_row(name, args))
        print(json.dumps(rows[-1]))
    suffix = f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    conditions = {
        "minutes": args.minutes, "threads": args.threads, "iw_samples": args.k,
        "test_limit": args.limit, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "command": "python benchmarks/leaderboard.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (
                ("minutes", args.minutes), ("only", ",".join(names)), ("k", args.k),
                ("limit", args.limit), ("threads", args.threads), ("tag", args.tag))
            if v not in (None, "")),
    }
    (RESULTS / f"leaderboard{suffix}.json").write_text(
        json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    anchors = "\n".join(f"| {a} | {v} |" for a, v in ANCHORS)
    text = (f"# Leaderboard{' (' + args.tag + ')' if args.tag else ''}\n\n"
            f"Command: `{conditions['command']}`\n\n"
            f"Conditions: {args.minutes:g} min of training per row on {args.threads} "
            f"thread(s), MNIST train+valid (60k) with dynamic binarization, test split "
            f"{'(first ' + str(args.limit) + ' images) ' if args.limit else ''}with the "
            f"evaluator's fixed binarization, K={args.k} importance samples; torch "
            f"{torch.__version__}. Numbers are nats per image.\n\n{table(rows, args)}\n\n"
            "Published anchors (test NLL, dynamically binarized MNIST, importance "
            "sampling; many GPU-hours of training):\n\n| model | NLL |\n|---|---:|\n"
            f"{anchors}\n")
    (ROOT / "docs" / f"leaderboard{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
