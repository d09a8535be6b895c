"""Does training slow down as subnormal floats appear? Epoch rates with and without
flush-to-zero.

    python benchmarks/denormals.py --config default --epochs 12     # results/denormals-default.json

Trains the config (2 threads, no validation or IS evaluation, as the `vaelab` command runs it
after ``keep_freed_memory()``) in a fresh process twice: as shipped, and with
``torch.set_flush_denormal(True)`` (x86 FTZ/DAZ: subnormal results and operands become 0).
Prints each epoch's images/s. A rate that falls epoch by epoch only without flushing means
subnormal values reached the step's kernels (x86 handles them through slow microcode
assists). A finding, not a setting: vaelab does not flush by default (it is process-wide and
turns exp(-100) into 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def train(config: str, epochs: int, threads: int, flush: bool) -> list[float]:
    import torch

    if flush:
        torch.set_flush_denormal(True)
    from vaelab.api import fit
    from vaelab.config import load_config
    from vaelab.training.heap import keep_freed_memory

    keep_freed_memory()
    cfg = load_config(ROOT / "configs" / f"{config}.toml", [
        f"train.epochs={epochs}", f"train.threads={threads}", "train.progress=false",
        "eval.iw_samples=0", "data.valid_split=''", "train.time_limit_minutes=0"])
    with tempfile.TemporaryDirectory() as tmp:
        run = fit(cfg, out=Path(tmp) / "run", pictures=False)
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
    return [round(json.loads(line)["images_per_sec"]) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="a stem of configs/*.toml")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=["plain", "flush"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(train(args.config, args.epochs, args.threads, args.part == "flush")))
        return
    rates = {}
    for part in ("plain", "flush"):
        out = subprocess.run([sys.executable, __file__, "--config", args.config, "--epochs",
                              str(args.epochs), "--threads", str(args.threads), "--part", part],
                             check=True, capture_output=True, text=True).stdout
        rates[part] = json.loads(out.splitlines()[-1])
        print(part, rates[part], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / f"denormals-{args.config}.json"
    out_path.write_text(json.dumps({
        "command": f"python benchmarks/denormals.py --config {args.config} --epochs "
                   f"{args.epochs} --threads {args.threads}",
        "load_average_after": list(os.getloadavg()),
        "images_per_sec_by_epoch": {"as shipped": rates["plain"],
                                    "set_flush_denormal(True)": rates["flush"]}},
        indent=2) + "\n")
    print(f"wrote {out_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
