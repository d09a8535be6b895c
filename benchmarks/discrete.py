"""Discrete latents on binarized MNIST against Jang et al. 2017, table 1 (test -ELBO).

Trains the configs with the `vaelab train` command line, then tabulates the test
negative ELBO of the *discrete* model (hard samples, exact KL), the importance-sampled
test NLL, training time and images/s:

    python benchmarks/discrete.py                      # the full runs (the configs' epochs)
    python benchmarks/discrete.py --epochs 1 --k 100   # a short check that it all works
    python benchmarks/discrete.py --only st --epochs 20
    python benchmarks/discrete.py --only bernoulli --threads 1          # 300 epochs
    python benchmarks/discrete.py --only bernoulli-unbiased --threads 1   # starts from that run

Writes benchmarks/results/discrete.json and discrete.md (``--tag`` adds a suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"

# name: (config file, the paper's test -ELBO, description[, the run it starts from])
RUNS = {
    "categorical": ("configs/discrete-categorical.toml", 101.5,
                    "20 x 10 categorical, Gumbel-softmax"),
    "st": ("configs/discrete-st.toml", 107.8, "20 x 10 categorical, ST Gumbel-softmax"),
    "bernoulli": ("configs/discrete-bernoulli.toml", 105.0,
                  "200 Bernoulli, Gumbel-softmax, KL warm-up 10 epochs"),
    # the second stage: train.init_from = the "bernoulli" run folder (train that first)
    "bernoulli-unbiased": ("configs/discrete-bernoulli-unbiased.toml", 105.0,
                           "200 Bernoulli, REINFORCE + leave-one-out (K=2) from the "
                           "Gumbel-softmax run's weights", "bernoulli"),
}


def run_folder(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out_dir) / f"discrete-{name}"


def train(name: str, args: argparse.Namespace) -> dict:
    config, paper, what, *first = RUNS[name]
    if args.overrides:  # the label says what differs from the config
        what += " + " + ", ".join(args.overrides)
    out = run_folder(args, name)
    command = [sys.executable, "-m", "vaelab", "train", "-c", str(ROOT / config),
               "--out", str(out), "--overwrite", "--no-progress",
               "--set", f"train.threads={args.threads}", "--set", f"eval.iw_samples={args.k}"]
    first_summary = None
    if first:  # a second stage: start from the first stage's run folder
        start_from = run_folder(args, first[0])
        if not (start_from / "summary.json").is_file():
            raise SystemExit(f"{name} starts from the {first[0]} run, but {start_from} has no "
                             f"finished run; run --only {first[0]} first (same --out-dir)")
        first_summary = json.loads((start_from / "summary.json").read_text())
        command += ["--set", f"train.init_from={start_from}"]
    if args.epochs is not None:
        command += ["--set", f"train.epochs={args.epochs}"]
    for override in args.overrides:
        command += ["--set", override]
    shown = " ".join(c if c != sys.executable else "python" for c in command).replace(
        f"{ROOT}/", "")  # commands as run from the repo root
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = summary["test"]
    return {
        "name": name, "what": what, "config": config, "command": shown,
        "epochs": summary["epochs"], "steps": summary["steps"], "threads": args.threads,
        "train_seconds": summary["train_seconds"],
        # both stages, for a run that starts from another
        "first_stage_epochs": first_summary["epochs"] if first_summary else None,
        "first_stage_train_seconds": first_summary["train_seconds"] if first_summary else None,
        "wall_seconds_with_eval": round(wall, 1),
        "images_per_sec": summary["images_per_sec"],
        "final_temperature": history[-1].get("temperature") if history else None,
        "test_neg_elbo": round(-test["elbo"], 2), "test_elbo_stderr": round(test["elbo_stderr"], 2),
        "test_rec": round(test["rec"], 2), "test_kl": round(test["kl"], 2),
        "test_nll": round(test["nll"], 2) if "nll" in test else None,
        "iw_samples": test.get("iw_samples"),
        "paper_neg_elbo": paper,
        "latent_audit": summary["objective_audit"].get("latent", ""),
        "train_neg_bound_curve": [round(-r["train_bound"], 2) for r in history
                                  if "train_bound" in r],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| run | epochs | threads | train time (s) | images/s | final tau | test -ELBO | "
             "test NLL (K) | Jang et al. -ELBO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nll = f"{r['test_nll']} ({r['iw_samples']})" if r["test_nll"] is not None else "-"
        tau = f"{r['final_temperature']:.3g}" if r["final_temperature"] is not None else "-"
        epochs, seconds = str(r["epochs"]), f"{r['train_seconds']:.0f}"
        if r.get("first_stage_epochs") is not None:  # "first + second stage"
            epochs = f"{r['first_stage_epochs']} + {epochs}"
            seconds = f"{r['first_stage_train_seconds']:.0f} + {seconds}"
        lines.append(f"| {r['what']} | {epochs} | {r['threads']} | {seconds} | "
                     f"{r['images_per_sec']:.0f} | {tau} | {r['test_neg_elbo']} ± "
                     f"{r['test_elbo_stderr']} | {nll} | {r['paper_neg_elbo']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=list(RUNS),
                        help="run only these (repeatable), in this order; default all")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override train.epochs of every run (default: each config's)")
    parser.add_argument("--k", type=int, default=1000, help="importance samples, test NLL")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra config override for every run")
    parser.add_argument("--out-dir", default="runs/discrete", help="run folders")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    rows = [train(name, args) for name in (args.only or list(RUNS))]
    RESULTS.mkdir(exist_ok=True)
    stem = "discrete" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
