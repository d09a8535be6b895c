"""Data-parallel throughput: 1 process vs N processes (DistributedDataParallel, gloo, CPU).

    python benchmarks/ddp.py                                  # 3 epochs on MNIST's 50k
    python benchmarks/ddp.py --epochs 2 --train-limit 10000   # short

Trains the default MNIST model with the same global batch (128) and seed through the real
command line: ``vaelab train`` for one process (with 1 thread, and with --threads), and
``vaelab train --nproc N`` (torchrun sets one thread per process) for N processes. Reports
training images/s (all ranks together) of the first and the best later epoch, and the
final training bound, which should agree across the rows (the runs compute the same
thing). Writes benchmarks/results/ddp.json and prints a markdown table. On a machine with
C cores, N processes x 1 thread competes with 1 process x C threads; other processes on the
machine distort the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def train(out: Path, nproc: int | None, threads: int, args: argparse.Namespace) -> dict:
    sets = {"train.epochs": args.epochs, "data.train_limit": args.train_limit,
            "data.test_split": '""', "train.threads": threads, "train.progress": "false"}
    command = [sys.executable, "-m", "vaelab", "train", "--out", str(out), "--no-progress",
               *(a for k, v in sets.items() for a in ("--set", f"{k}={v}")),
               *(["--nproc", str(nproc)] if nproc else [])]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_sec"] for r in records]
    return {"processes": nproc or 1, "threads_per_process": threads,
            "first_epoch_images_per_sec": round(speeds[0], 1),
            "steady_images_per_sec": round(max(speeds[1:] or speeds), 1),
            "train_seconds": round(sum(r["train_seconds"] for r in records), 2),
            "wall_seconds": round(time.perf_counter() - start, 1),
            "final_train_bound": round(records[-1]["train_bound"], 4),
            "final_val_bound": round(records[-1].get("val_bound", float("nan")), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=0, help="0 = all 50k")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of the multi-threaded one-process row")
    parser.add_argument("--out", default=str(RESULTS / "ddp.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(None, 1), (None, args.threads), (args.nproc, 1)]
        for i, (nproc, threads) in enumerate(plan):
            rows.append(train(Path(tmp) / f"run{i}", nproc, threads, args))
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": f"python benchmarks/ddp.py --epochs {args.epochs} --train-limit "
                         f"{args.train_limit} --nproc {args.nproc} --threads {args.threads}",
              "cpu_count": os.cpu_count(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| processes x threads | images/s (epoch 1) | images/s (steady) | final train bound |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} x {r['threads_per_process']} | "
              f"{r['first_epoch_images_per_sec']:.0f} | {r['steady_images_per_sec']:.0f} | "
              f"{r['final_train_bound']:.3f} |")


if __name__ == "__main__":
    main()
