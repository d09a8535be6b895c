"""Precision and compilation: float32 vs bf16 autocast vs torch.compile, default MNIST model.

    python benchmarks/precision.py                        # full: 10 epochs on 50k, K=1000
    python benchmarks/precision.py --epochs 2 --train-limit 10000 --iw 50 --test-limit 2000

Each variant trains the default config (784-512-20 Bernoulli VAE, batch 128, dynamic
binarization, seed 0) for the same number of epochs; then the trained model (float32,
the best validation checkpoint) is evaluated on the first --test-limit test images: ELBO
and importance-sampled NLL with K = --iw.
Throughput, two ways: (1) training images/s per epoch from metrics.jsonl (the first epoch
pays for compilation); (2) steady-state images/s of the training step (binarize, ELBO,
backward, Adam; batch 128) measured *interleaved*: after a warm-up (compilation included),
the variants take turns in --rounds rounds of --round-steps steps and the median per
variant is reported, so load from other processes hits all variants alike. Writes
benchmarks/results/precision.json and prints markdown tables. Re-run on a quiet machine for
numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vaelab.api import fit
from vaelab.build import build_model, build_objective
from vaelab.config import load_config
from vaelab.data.prepare import load_split
from vaelab.schedules import Progress
from vaelab.training.runs import RunDir
from vaelab.training.speed import accelerate
from vaelab.training.trainer import make_optimizer

RESULTS = Path(__file__).parent / "results"
VARIANTS = {  # name: overrides
    "float32": [],
    "float32, general path": ["train.fused=false"],  # autograd instead of the fused ELBO
    "bf16": ["train.precision=bf16"],
    "float32 + compile": ["train.compile=true"],
    "bf16 + compile": ["train.precision=bf16", "train.compile=true"],
}


def run_variant(name: str, extra: list[str], args: argparse.Namespace, root: Path) -> dict:
    sets = [f"train.epochs={args.epochs}", f"data.train_limit={args.train_limit}",
            'data.test_split=""', f"train.threads={args.threads}", "train.progress=false",
            *extra]
    start = time.perf_counter()
    run = fit(load_config(overrides=sets), out=root / name.replace(" ", ""), pictures=False)
    wall = time.perf_counter() - start
    records = RunDir(run.path).read_metrics()
    torch.manual_seed(0)  # the same importance samples' seed for every variant
    test = run.evaluate("test", iw_samples=args.iw, limit=args.test_limit or None)
    speeds = [r["images_per_sec"] for r in records]
    return {"variant": name, "overrides": extra, "epochs": len(records),
            "first_epoch_images_per_sec": round(speeds[0], 1),
            "steady_images_per_sec": round(max(speeds[1:] or speeds), 1),
            "train_seconds": round(sum(r["train_seconds"] for r in records), 2),
            "wall_seconds": round(wall, 1),
            "final_train_bound": round(records[-1]["train_bound"], 3),
            "test_elbo": round(test["elbo"], 3), "test_elbo_stderr": round(test["elbo_stderr"], 3),
            "test_nll": round(test["nll"], 3),
            "test_nll_stderr": round(test["log_likelihood_stderr"], 3)}


def step_runner(extra: list[str], x: torch.Tensor, batch: int):
    """A function running n training steps of one variant on batches of ``x``."""
    config = load_config(overrides=extra)
    torch.manual_seed(0)
    model = build_model(config.model, tuple(x.shape[1:]), data_mean=x.mean(0))
    objective = build_objective(config.objective, tuple(x.shape[1:]), fused=config.train.fused)
    accelerate([model.encoder, model.decoder], precision=config.train.precision,
               compile=config.train.compile)
    optimizer = make_optimizer(nn.ModuleList([model, objective]), config.train.lr)
    model.train()
    position = [0]

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            i = position[0] % (x.shape[0] // batch)
            position[0] += 1
            xb = torch.bernoulli(x[i * batch:(i + 1) * batch])
            loss = objective(model, xb, Progress(step=0, epoch=0.0)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return n * batch / (time.perf_counter() - start)

    return run


def interleaved_throughput(args: argparse.Namespace) -> dict[str, dict]:
    x = load_split(load_config(), "train").x[:10_000]
    runners = {name: step_runner(VARIANTS[name], x, 128) for name in args.variants}
    for run in runners.values():
        run(args.warmup_steps)  # compilation happens here
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            speeds[name].append(run(args.round_steps))
    return {name: {"median_images_per_sec": round(statistics.median(v), 1),
                   "min": round(min(v), 1), "max": round(max(v), 1)}
            for name, v in speeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=0, help="0 = all 50k")
    parser.add_argument("--iw", type=int, default=1000, help="K of the test NLL")
    parser.add_argument("--test-limit", type=int, default=0, help="test images (0 = all 10k)")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS / "precision.json"))
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    steady = interleaved_throughput(args)
    print(json.dumps(steady), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            rows.append(run_variant(name, VARIANTS[name], args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python benchmarks/precision.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k not in ("variants", "out")),
              "torch": torch.__version__, "python": platform.python_version(),
              "cpu_threads": torch.get_num_threads(), "interleaved_throughput": steady,
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| variant | step images/s, interleaved median (min-max) | images/s epoch 1 / "
          "best later | final train bound | test ELBO | test NLL |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        s = steady[r["variant"]]
        print(f"| {r['variant']} | {s['median_images_per_sec']:.0f} ({s['min']:.0f}-"
              f"{s['max']:.0f}) | {r['first_epoch_images_per_sec']:.0f} / "
              f"{r['steady_images_per_sec']:.0f} | {r['final_train_bound']:.3f} | "
              f"{r['test_elbo']:.2f} ± {r['test_elbo_stderr']:.2f} | {r['test_nll']:.2f} ± "
              f"{r['test_nll_stderr']:.2f} |")


if __name__ == "__main__":
    main()
