"""One leaderboard for every model class, trained under the same time budget and data protocol.

    python benchmarks/leaderboard.py --minutes 150              # the full table (hours)
    python benchmarks/leaderboard.py --minutes 3 --only vae,topdown --k 1000 --limit 1000 \\
        --threads 1 --tag short                                 # a short version
    python benchmarks/leaderboard.py --at 10,30,60 --only iwae,topdown --threads 1 --jobs 2 \\
        --tag budgets                                           # NLL after 10, 30, 60 min

Each row trains one model class on MNIST (train+valid, 60k images, dynamic binarization)
for ``--minutes`` of training (``train.time_limit_minutes``: the epoch that crosses the
budget finishes), then evaluates the test split with K importance samples (the fixed seeded
binarization of the evaluator): epochs, training wall time, test NLL with its standard
error. Conditional rows report -log p(x|y) (labels given), which is not comparable with
-log p(x); the table says so. ``--at 10,30,60`` evaluates each row after 10, 30 and 60
minutes of training: one run per row, stopped at each budget, evaluated, and resumed with
the next budget (``fit(resume=..., changes=["train.time_limit_minutes=..."])``); the
learning rate decays per epoch, not per budget, so the run passes through the same weights
as a run trained for the last budget alone (the time spent evaluating is not training time).
``--resume --at 150`` continues the run folders of an earlier leaderboard with the same
``--runs`` and ``--tag`` to longer budgets, keeping the points already in its results file.
Writes benchmarks/results/leaderboard[-TAG].json and
docs/leaderboard[-TAG].md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaelab.api import fit
from vaelab.config import load_config
from vaelab.viz.export import markdown_cell

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
    """Train one row, evaluating it after each budget of ``args.at``; its points."""
    config_name, extra, description = ROWS[name]
    extra = [*extra, *args.set]
    budgets = args.at or [args.minutes]
    out = Path(args.runs) / f"leaderboard-{name}{'-' + args.tag if args.tag else ''}"
    earlier: list[dict] = []
    if args.resume:
        if not (out / "summary.json").is_file():
            raise SystemExit(f"--resume: no finished run in {out}; run the row without "
                             "--resume first (same --runs and --tag)")
        row = next((r for r in previous_results(args.tag).get("rows", [])
                    if r["row"] == name), None)
        if row is not None:
            extra = row["overrides"]  # the run keeps the overrides it was trained with
            earlier = [p for p in row["points"] if p["minutes"] < budgets[0]]
    overrides = [*extra, "train.progress=false", "eval.iw_samples=0",
                 f"train.time_limit_minutes={budgets[0]}", f"train.threads={args.threads}"]
    config = load_config(ROOT / "configs" / config_name, overrides)
    points = list(earlier)
    # wall time of training only, counted on from the earlier points
    start = time.perf_counter() - (earlier[-1]["wall_seconds"] if earlier else 0.0)
    for i, minutes in enumerate(budgets):
        if i == 0 and not args.resume:
            run = fit(config, out=out, overwrite=True, pictures=False)
        else:
            run = fit(None, resume=out, changes=[f"train.time_limit_minutes={minutes}"],
                      pictures=False)
        train_wall = time.perf_counter() - start
        summary = json.loads((run.path / "summary.json").read_text())
        eval_start = time.perf_counter()
        test = run.evaluate("test", iw_samples=args.k, limit=args.limit, seed=0)
        eval_seconds = time.perf_counter() - eval_start
        points.append({
            "minutes": minutes, "epochs": summary["epochs"],
            "train_seconds": summary["train_seconds"], "wall_seconds": round(train_wall, 1),
            "eval_seconds": round(eval_seconds, 1),
            "test_nll": round(test["nll"], 3),
            "test_nll_stderr": round(test["log_likelihood_stderr"], 3),
            "test_n": test["n"], "kl_per_layer": test.get("kl_per_layer"),
            "active_units": test["active_units"], "latent_units": test["latent_units"],
            "active_units_per_layer": test.get("active_units_per_layer"),
        })
        print(json.dumps({"row": name, **points[-1]}), flush=True)
        start += eval_seconds  # wall time of training only
    return {"row": name, "model": description, "config": f"configs/{config_name}",
            "overrides": extra, "iw_samples": args.k,
            "given_labels": bool(config.model.conditional), **points[-1],
            "points": points}


def results_path(tag: str) -> Path:
    return RESULTS / f"leaderboard{'-' + tag if tag else ''}.json"


def previous_results(tag: str) -> dict:
    """The results file an earlier run with ``tag`` wrote ({} if absent)."""
    path = results_path(tag)
    return json.loads(path.read_text()) if path.is_file() else {}


ROW_MARK = "LEADERBOARD-ROW "


def run_side_by_side(names: list[str], args: argparse.Namespace) -> list[dict]:
    """Each row in its own child process, ``args.jobs`` at a time; rows in ``names`` order.

    Rows that run together share the machine under the same conditions, so their budgets
    compare fairly; their log lines go to this process's output as they come."""
    argv = [sys.executable, __file__, "--k", str(args.k), "--threads", str(args.threads),
            "--runs", args.runs, "--tag", args.tag]
    argv += ["--at", ",".join(f"{m:g}" for m in args.at)] if args.at else \
        ["--minutes", str(args.minutes)]
    argv += ["--limit", str(args.limit)] if args.limit else []
    argv += ["--resume"] if args.resume else []
    argv += [a for o in args.set for a in ("--set", o)]
    results: dict[str, dict] = {}
    pending = list(names)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running.append((name, subprocess.Popen([*argv, "--part", name],
                                                   stdout=subprocess.PIPE, text=True)))
        name, proc = running.pop(0)
        out, _ = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith(ROW_MARK)]
        if proc.returncode or not lines:
            raise SystemExit(f"row {name} failed (exit {proc.returncode}); its output:\n{out}")
        results[name] = json.loads(lines[-1][len(ROW_MARK):])
        print(json.dumps(results[name]), flush=True)
    return [results[n] for n in names]


def table(rows: list[dict], args: argparse.Namespace) -> str:
    if args.at:
        return budget_table(rows, args)
    lines = [
        f"| model | config | epochs | training (min) | test NLL (K={args.k}) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        nll = f"{r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f}"
        if r["given_labels"]:
            nll += " (-log p(x\\|y))"
        over = " ".join(f"`--set {o}`" for o in r["overrides"])
        lines.append(f"| {markdown_cell(r['model'])} | `{r['config']}` {over} | {r['epochs']} | "
                     f"{r['train_seconds'] / 60:.1f} | {nll} |")
    return "\n".join(lines)


def budget_table(rows: list[dict], args: argparse.Namespace) -> str:
    """One column per budget: test NLL ± standard error (epochs reached)."""
    budgets = sorted({p["minutes"] for r in rows for p in r["points"]})
    head = " | ".join(f"after {m:g} min" for m in budgets)
    lines = [f"| model | config | {head} |", "|---|---|" + "---:|" * len(budgets)]
    for r in rows:
        cells = []
        at = {p["minutes"]: p for p in r["points"]}
        for m in budgets:
            p = at.get(m)
            nll = "" if p is None else \
                f"{p['test_nll']:.2f} ± {p['test_nll_stderr']:.2f} ({p['epochs']} epochs)"
            cells.append(nll + (" (-log p(x\\|y))" if r["given_labels"] and p else ""))
        over = " ".join(f"`--set {o}`" for o in r["overrides"])
        lines.append(f"| {markdown_cell(r['model'])} | `{r['config']}` {over} | "
                     f"{' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="training budget per row (train.time_limit_minutes)")
    parser.add_argument("--at", default="",
                        help="comma-separated budgets in minutes, increasing: evaluate each "
                             "row after each of them (one run per row, resumed)")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--k", type=int, default=5000, help="importance samples at test")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate on the first N test images only (short versions)")
    parser.add_argument("--threads", type=int, default=2, help="train.threads of every row")
    parser.add_argument("--runs", default="runs", help="folder for the run folders")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--jobs", type=int, default=1,
                        help="rows trained at the same time, each in its own process "
                             "(e.g. 2 rows x --threads 1 on 2 cores: side by side)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every row (repeatable), e.g. "
                             "--set train.lr_decay=0.998; recorded in the row's overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue the rows' runs from an earlier leaderboard with the "
                             "same --runs and --tag to the budgets of --at, keeping its points")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # one row, in a child process
    args = parser.parse_args()
    try:
        args.at = [float(m) for m in args.at.split(",") if m.strip()]
    except ValueError:
        parser.error(f"--at {args.at!r}: give minutes separated by commas, e.g. 10,30,60")
    if args.at and (any(b <= 0 for b in args.at) or args.at != sorted(set(args.at))):
        parser.error(f"--at {args.at}: budgets must be positive and increasing, e.g. 10,30,60")
    if bool(args.at) == bool(args.minutes > 0):
        parser.error("give either --minutes M (one budget) or --at M1,M2,... (several)")
    if args.at:
        args.minutes = args.at[-1]
    if args.resume and not args.at:
        parser.error("--resume continues runs to longer budgets: give them with --at, "
                     "e.g. --resume --at 150")
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if args.part:
        print(ROW_MARK + json.dumps(run_row(args.part, args)), flush=True)
        return
    rows = run_side_by_side(names, args) if args.jobs > 1 else []
    for name in names if args.jobs <= 1 else []:
        rows.append(run_row(name, args))
        print(json.dumps(rows[-1]))
    RESULTS.mkdir(exist_ok=True)
    conditions = {
        "minutes": args.minutes, "threads": args.threads, "iw_samples": args.k,
        "test_limit": args.limit, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "budgets": sorted({p["minutes"] for r in rows for p in r["points"]}),
        "jobs": args.jobs,
        "VAELAB_MATMUL": os.environ.get("VAELAB_MATMUL", ""),
        "command": "python benchmarks/leaderboard.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (
                ("at", ",".join(f"{m:g}" for m in args.at)) if args.at else
                ("minutes", args.minutes), ("only", ",".join(names)), ("k", args.k),
                ("limit", args.limit), ("threads", args.threads),
                ("jobs", args.jobs if args.jobs > 1 else None), ("tag", args.tag))
            if v not in (None, "")) + "".join(f" --set {o}" for o in args.set)
            + (" --resume" if args.resume else ""),
    }
    earlier = previous_results(args.tag).get("conditions") if args.resume else None
    if earlier:  # the commands that trained the earlier points
        conditions["resumed_from"] = [*earlier.get("resumed_from", []), earlier["command"]]
    results_path(args.tag).write_text(
        json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    anchors = "\n".join(f"| {a} | {v} |" for a, v in ANCHORS)
    budget_words = (", ".join(f"{m:g}" for m in conditions["budgets"])
                    + " min (evaluated after each)"
                    if args.at else f"{args.minutes:g} min")
    together = f", {args.jobs} rows at a time side by side" if args.jobs > 1 else ""
    text = (f"# Leaderboard{' (' + args.tag + ')' if args.tag else ''}\n\n"
            f"Command: `{conditions['command']}`\n\n"
            f"Conditions: {budget_words} of training per row on {args.threads} "
            f"thread(s){together}, MNIST train+valid (60k) with dynamic binarization, test split "
            f"{'(first ' + str(args.limit) + ' images) ' if args.limit else ''}with the "
            f"evaluator's fixed binarization, K={args.k} importance samples; torch "
            f"{torch.__version__}. Numbers are nats per image.\n\n{table(rows, args)}\n\n"
            "Published anchors (test NLL, dynamically binarized MNIST, importance "
            "sampling; many GPU-hours of training):\n\n| model | NLL |\n|---|---:|\n"
            f"{anchors}\n")
    suffix = f"-{args.tag}" if args.tag else ""
    (ROOT / "docs" / f"leaderboard{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
