"""The priors / posteriors / objectives table on MNIST: test NLL (importance sampling) per config.

    python benchmarks/priors.py                  # the full table: configs/paper-*.toml,
                                                 # 2 h of training each, test NLL with K=5000
    python benchmarks/priors.py --short          # a smoke version: ~20 s of training each on
                                                 # 2000 images, K=100 on 1000 test images
    python benchmarks/priors.py --only vae,vamp --minutes 30 --k 1000 --tag 30min

Each row trains one config (``configs/paper-<name>.toml``) into a run folder, then evaluates
the test split with K importance samples. Writes benchmarks/results/priors[-short].json and a
markdown table beside it (the one quoted in docs/priors.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vaelab.api import fit, load_run
from vaelab.config import load_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
ROWS = ["vae", "mixture", "vamp", "iwae5", "iwae50", "fullcov", "best"]
ANCHORS = {"vae": "86.76 (IWAE paper, VAE)", "iwae50": "84.78 (IWAE paper, IWAE K=50)",
           "vamp": "85.57 (VampPrior paper, static binarization)"}


def subset_file(n: int, folder: Path) -> Path:
    """The first n MNIST training images and the whole test split, as uint8 in an .npz (the
    short version trains on it so that one epoch of IWAE K=50 fits its minute)."""
    from vaelab.data import load_dataset

    path = folder / f"mnist-train{n}.npz"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
        import numpy as np

        def to_u8(x: torch.Tensor) -> np.ndarray:
            return (x * 255).round().to(torch.uint8).numpy()

        np.savez(path, x_train=to_u8(train.x[:n]), x_test=to_u8(test.x),
                 y_train=train.y[:n].numpy(), y_test=test.y.numpy())
    return path


def run_row(name: str, args: argparse.Namespace) -> dict:
    overrides = [*args.overrides, "train.progress=false", "eval.iw_samples=0"]
    if args.train_subset:
        path = subset_file(args.train_subset, Path(args.runs))
        overrides += [f"data.name='{path}'", "data.train_split=train"]
    if args.minutes is not None:
        overrides.append(f"train.time_limit_minutes={args.minutes}")
    config = load_config(ROOT / "configs" / f"paper-{name}.toml", overrides)
    out = Path(args.runs) / f"priors-{name}"
    start = time.perf_counter()
    if args.evaluate_only:  # a finished run folder of an earlier call: evaluate it again
        run = load_run(out)
    else:
        run = fit(config, out=out, overwrite=True, pictures=False)
    train_wall = time.perf_counter() - start
    summary = json.loads((run.path / "summary.json").read_text())
    start = time.perf_counter()
    test = run.evaluate("test", iw_samples=args.k, limit=args.limit)
    eval_wall = time.perf_counter() - start
    cfg = run.config
    return {
        "row": name, "config": f"configs/paper-{name}.toml", "run": str(run.path),
        "prior": cfg.model.prior, "posterior": cfg.model.latent,
        "objective": f"{cfg.objective.name} K={cfg.objective.samples}",
        "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
        "wall_seconds": round(train_wall + eval_wall, 1),
        "eval_seconds": round(eval_wall, 1), "images_per_sec": summary["images_per_sec"],
        "test_n": test["n"], "iw_samples": args.k,
        "test_elbo": round(test["elbo"], 2), "test_nll": round(test["nll"], 2),
        "test_nll_stderr": round(test["log_likelihood_stderr"], 2),
        "active_units": test["active_units"], "latent_units": test["latent_units"],
        "warnings": test["warnings"], "anchor": ANCHORS.get(name, ""),
    }


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| config | prior | posterior | objective | epochs | train s | test ELBO | "
             "test NLL ± se | active | anchor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['prior']} | {r['posterior']} | {r['objective']} | "
                     f"{r['epochs']} | {r['train_seconds']:.0f} | {r['test_elbo']:.2f} | "
                     f"{r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | "
                     f"{r['active_units']}/{r['latent_units']} | {r['anchor']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true",
                        help="smoke version: --minutes 0.5 --k 100 --limit 1000 "
                             "--train-subset 2000")
    parser.add_argument("--only", default=",".join(ROWS), help=f"rows: {','.join(ROWS)}")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training time limit per row (default: the config's, 120)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples for test NLL")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test "
                                                                "images only")
    parser.add_argument("--train-subset", type=int, default=0,
                        help="train on the first N MNIST training images only")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for every row")
    parser.add_argument("--runs", default="runs/priors", help="run folders go here")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: evaluate the run folders an earlier call left in "
                             "--runs (e.g. again with a larger --k)")
    parser.add_argument("--tag", default="", help="suffix of the result files "
                                                  "(priors-TAG.json / .md)")
    args = parser.parse_args()
    if args.short:
        args.minutes = 0.5 if args.minutes is None else args.minutes
        args.k, args.limit = min(args.k, 100), args.limit or 1000
        args.train_subset = args.train_subset or 2000
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"--only: unknown row '{unknown[0]}'; choose from {', '.join(ROWS)}")
    results = []
    for name in rows:
        results.append(run_row(name, args))
        r = results[-1]
        print(f"{name}: NLL {r['test_nll']} ± {r['test_nll_stderr']} (K={args.k}, "
              f"n={r['test_n']}), {r['epochs']} epochs in {r['train_seconds']:.0f} s", flush=True)
    tag = "priors-short" if args.short else "priors"
    tag += f"-{args.tag}" if args.tag else ""
    header = (f"{'SHORT smoke run' if args.short else 'Run'}: training limit "
              f"{args.minutes if args.minutes is not None else 'from config'} min per row "
              f"(checked after each epoch), train images "
              f"{args.train_subset or 'all 60k'}, "
              f"K={args.k}, test images {args.limit or 'all'}, overrides "
              f"{' '.join(args.overrides) or 'none'}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"header": header, "rows": results},
                                                    indent=2) + "\n")
    table = markdown(results, header)
    (RESULTS / f"{tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
