"""Peak memory of training on memory-mapped .npy shards larger than the process may hold.

    python benchmarks/memmap.py --threads 1                 # 1M 28x28 uint8 images, ~0.8 GB
    python benchmarks/memmap.py --rows 50000 --shard-rows 10000 --batch-size 512   # small

Writes ``--rows`` 28x28 uint8 images (smooth random blobs) as ``.npy`` shards of
``--shard-rows`` to a temporary folder (removed afterwards; ``--keep`` keeps it), then trains
the default MLP VAE on them for one epoch through ``vaelab.fit`` (``data.name`` = the folder:
memory-mapped, split 99/0.5/0.5 % by seed; batch ``--batch-size``, so 1M rows at 2048 are
~480 steps), evaluates on the 0.5% test split, and reports the peak resident set size
(``resource.getrusage(...).ru_maxrss``) of this process: after writing the data and a
warm-up fit on a small part of it (torch and the model's own memory), and after the big fit.
The float32 copy vaelab used to make would alone be 4x the data (3.1 GB for 1M rows).
Prints one JSON object; with ``--save`` also writes benchmarks/results/memmap.json.
A memory figure, not a timing: it may run on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (ru_maxrss: KB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def write_shards(folder: Path, rows: int, shard_rows: int, seed: int = 0) -> list[Path]:
    """``rows`` 28x28 uint8 images of smooth blobs (7x7 noise, upsampled 4x, thresholded
    softly), in shards; one shard in memory at a time."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        x = np.empty((n, 28, 28), dtype=np.uint8)
        for a in range(0, n, 4096):  # float32 temporaries of 4096 images at a time
            coarse = rng.random((min(4096, n - a), 7, 7), dtype=np.float32)
            fine = np.kron(coarse, np.ones((4, 4), dtype=np.float32))  # (b, 28, 28)
            x[a:a + len(coarse)] = np.clip((fine - 0.45) * 4, 0, 1) * 255
        path = folder / f"part-{k:04d}.npy"
        np.save(path, x)
        paths.append(path)
    return paths


def settings(folder: Path, batch_size: int) -> list[str]:
    return [f"data.name='{folder}'", "data.split_fractions=[0.99, 0.005, 0.005]",
            f"train.batch_size={batch_size}", "train.epochs=1", "train.progress=false",
            f"train.threads={torch.get_num_threads()}", "eval.iw_samples=10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="images to write")
    parser.add_argument("--shard-rows", type=int, default=50_000, help="images per .npy file")
    parser.add_argument("--batch-size", type=int, default=2048, help="training batch")
    parser.add_argument("--warmup-rows", type=int, default=0,
                        help="images of the warm-up fit (default: rows / 20, at least 2000)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all)")
    parser.add_argument("--dir", default="", help="where to write (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data and runs")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/memmap.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vaelab.api import fit
    from vaelab.config import load_config

    root = Path(tempfile.mkdtemp(prefix="vaelab-memmap-", dir=args.dir or None))
    try:
        start = time.perf_counter()
        write_shards(root / "data", args.rows, args.shard_rows)
        write_seconds = time.perf_counter() - start
        after_write = peak_rss_mb()
        # warm-up: torch, the model, optimizer and evaluation on a small part of the data
        warm = args.warmup_rows or max(args.rows // 20, 2000)
        write_shards(root / "warm", warm, args.shard_rows, seed=1)
        fit(load_config(None, settings(root / "warm", args.batch_size)), out=root / "warm-run",
            pictures=False)
        after_warmup = peak_rss_mb()
        start = time.perf_counter()
        run = fit(load_config(None, settings(root / "data", args.batch_size)),
                  out=root / "run", pictures=False)
        fit_seconds = time.perf_counter() - start
        peak = peak_rss_mb()
        metrics = [json.loads(line) for line in
                   (run.path / "metrics.jsonl").read_text().splitlines()]
        meta = json.loads((run.path / "meta.json").read_text())
        data_mb = args.rows * 784 / 2**20
        result = {
            "rows": args.rows, "shards": -(-args.rows // args.shard_rows),
            "data_mb_uint8": round(data_mb, 1), "float32_copy_mb": round(4 * data_mb, 1),
            "train_rows": meta["train_size"], "train_storage": meta["train_storage"],
            "steps": metrics[-1]["step"], "batch_size": args.batch_size,
            "peak_rss_mb_after_write": round(after_write, 1),
            "warmup_rows": warm, "peak_rss_mb_after_warmup": round(after_warmup, 1),
            "peak_rss_mb": round(peak, 1),
            "peak_rss_growth_mb": round(peak - after_warmup, 1),
            "under_1gb": peak < 1024,
            "train_bound": round(metrics[-1]["train_bound"], 2),
            "write_seconds": round(write_seconds, 1), "fit_seconds": round(fit_seconds, 1),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "memmap.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
