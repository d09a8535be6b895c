"""Training throughput on in-memory MNIST: uint8 storage (data.storage=auto) vs float32.

    python benchmarks/storage.py --threads 1            # 3 alternating runs of each, 2 epochs
    python benchmarks/storage.py --threads 2
    python benchmarks/storage.py --quick                # a smoke run (timings meaningless)

Each side trains the default config (784-512-20 MLP, Bernoulli, dynamic binarization,
batch 128; no validation or test split, so only training is timed) in a fresh Python
process of its own, as ``benchmarks/throughput.py`` measures vaelab; the sides alternate
``--repeats`` times and the medians of their best-epoch images/s are compared. float32 is
how vaelab stored every dataset before issue 15 (a float32 copy of the training split,
batches gathered from it); uint8 keeps a quarter of the memory and converts each batch to
k/255 (the same float32 numbers). Writes benchmarks/results/storage-<N>threads.json.
A timing: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from throughput import in_fresh_process  # benchmarks/throughput.py, beside this script

RESULTS = Path(__file__).parent / "results"
SIDES = ("float32", "auto")  # data.storage values; auto = uint8 for MNIST


def measure(storage: str, epochs: int, limit: int, out: Path) -> float:
    """Best-epoch images/s of the default model with ``data.storage=storage`` (this process)."""
    from vaelab.api import fit
    from vaelab.config import Config
    from vaelab.training.heap import keep_freed_memory

    keep_freed_memory()  # as the `vaelab` command does
    config = Config()
    config.data.storage = storage  # type: ignore[assignment]  # one of the Literal's values
    config.data.valid_split = ""
    config.data.test_split = ""
    config.data.train_limit = limit
    config.train.epochs = epochs
    config.train.threads = torch.get_num_threads()
    config.train.progress = False
    run = fit(config, out=out, overwrite=True, pictures=False)
    history = [json.loads(line) for line in
               (run.path / "metrics.jsonl").read_text().splitlines()]
    return max(r["images_per_sec"] for r in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per side")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (best is kept)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 5k images, 1 repeat")
    parser.add_argument("--part", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part:  # a child process measuring one side
        epochs, limit = (1, 5000) if args.quick else (args.epochs, 0)
        with tempfile.TemporaryDirectory() as tmp:  # the run folder is thrown away
            rate = measure(args.part, epochs, limit, Path(tmp) / "run")
        print(json.dumps({"images_per_sec": rate}))
        return
    repeats = 1 if args.quick else args.repeats
    runs: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(repeats):
        for side in SIDES:
            runs[side].append(in_fresh_process(side, args, __file__)["images_per_sec"])
    medians = {side: statistics.median(v) for side, v in runs.items()}
    result = {
        "threads": torch.get_num_threads(), "torch": torch.__version__, "quick": args.quick,
        "float32_images_per_sec": round(medians["float32"]),
        "uint8_images_per_sec": round(medians["auto"]),
        "ratio_uint8_to_float32": round(medians["auto"] / medians["float32"], 3),
        "runs": {("uint8" if k == "auto" else k): [round(v) for v in vs]
                 for k, vs in runs.items()},
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"storage-{torch.get_num_threads()}threads.json").write_text(
            json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
