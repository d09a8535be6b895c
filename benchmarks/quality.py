"""Quality against wall time: train a config, then test NLL with K=5000 importance samples.

    python benchmarks/quality.py default                 # the demo: `vaelab train` defaults
    python benchmarks/quality.py paper                   # configs/paper.toml, 1 hour budget
    python benchmarks/quality.py default --set train.epochs=5 --k 500   # a shorter check

Writes benchmarks/results/quality-<name>.json with the training time, the per-epoch
validation curve, and the test ELBO and NLL with standard errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaelab.api import fit
from vaelab.config import load_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="default, or a config name in configs/ (e.g. paper)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--k", type=int, default=5000, help="importance samples for test NLL")
    parser.add_argument("--out", default=None, help="run folder (default runs/quality-*)")
    args = parser.parse_args()
    path = None if args.name == "default" else ROOT / "configs" / f"{args.name}.toml"
    config = load_config(path, [*args.overrides, f"eval.iw_samples={args.k}",
                                "train.progress=false"])
    out = Path(args.out or f"runs/quality-{args.name}")
    start = time.perf_counter()
    run = fit(config, out=out, overwrite=True)
    total = time.perf_counter() - start
    summary = json.loads((run.path / "summary.json").read_text())
    history = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    test = summary["test"]
    result = {
        "config": args.name, "overrides": args.overrides, "run": str(run.path),
        "threads": torch.get_num_threads(),
        "train_seconds": summary["train_seconds"], "epochs": summary["epochs"],
        "total_seconds_with_eval": round(total, 1),
        "test_elbo": round(test["elbo"], 2), "test_elbo_stderr": round(test["elbo_stderr"], 2),
        "test_nll": round(test["nll"], 2),
        "test_nll_stderr": round(test["log_likelihood_stderr"], 2),
        "iw_samples": test["iw_samples"], "active_units": test["active_units"],
        "curve": [{"epoch": r["epoch"], "wall_time": round(r["wall_time"], 1),
                   "val_bound": r.get("val_bound"), "train_bound": r.get("train_bound")}
                  for r in history],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quality-{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.name}: test NLL {result['test_nll']} ± {result['test_nll_stderr']} nats "
          f"(K={args.k}), ELBO {result['test_elbo']}, {summary['epochs']} epochs in "
          f"{summary['train_seconds']:.0f} s of training")


if __name__ == "__main__":
    main()
