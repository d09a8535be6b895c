"""Time of the importance-sampled log-likelihood, fused weights against the general path.

    python benchmarks/eval_speed.py configs/paper-iwae5.toml --k 5000 --images 200
    python benchmarks/eval_speed.py configs/default.toml --k 5000 --images 10000 --repeats 1
    python benchmarks/eval_speed.py configs/paper.toml --k 5000 --images 1000 \
        --sides fused,fused-unblocked,general    # before/after the decoder's row blocks

Each side runs in a fresh process on ``--images`` of MNIST's test images (the evaluator's
fixed binarization) with the config's evaluation chunks and its model at its initial
weights (or a run folder's trained ones: extreme logits can cost more than initial ones),
``--repeats`` times, alternating. Sides: ``fused``
(``importance_log_likelihood(..., fused=True)``, ``evaluation/fused_weights.py``),
``general`` (``fused=False``, the distribution objects) and ``fused-unblocked`` (the fused
weights with each chunk decoded in one piece, as before ``BLOCK_ROWS``). The table gives
medians and the time extrapolated to the 10k test images (the cost is per image and
sample). Writes benchmarks/results/eval-speed-<config>-<threads>threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


SIDES = {"fused": "evaluation/fused_weights.py, as shipped",
         "fused-unblocked": "the same, each chunk decoded in one piece (BLOCK_ROWS off)",
         "general": "distribution objects (fused=False)"}


def measure(config: str, k: int, images: int, side: str) -> dict:
    from vaelab.build import build_model
    from vaelab.config import load_config
    from vaelab.data.prepare import load_split, prepare_eval_x
    from vaelab.evaluation import fused_weights
    from vaelab.evaluation.evaluate import importance_log_likelihood
    from vaelab.training.matmul import resolve_matmul

    fused = side != "general"
    if side == "fused-unblocked":
        fused_weights.BLOCK_ROWS = 2**62

    if (ROOT / config).is_dir():  # a trained run: its weights, config and test split
        from vaelab.api import load_run

        run = load_run(ROOT / config)
        cfg, model = run.config, run.model.eval()
        matmul = cfg.train.matmul  # resolved by load_run
        x = prepare_eval_x(cfg, load_split(cfg, "test"))[:images]
    else:
        cfg = load_config(ROOT / config)
        test = load_split(cfg, "test")
        x = prepare_eval_x(cfg, test)[:images]
        torch.manual_seed(0)
        model = build_model(cfg.model, test.event_shape).eval()
        matmul = resolve_matmul(cfg, model, rows=cfg.eval.batch_size,
                                samples=cfg.eval.sample_chunk).train.matmul  # as load_run
    torch.manual_seed(1)  # the same draws on every side
    importance_log_likelihood(model, x[:cfg.eval.batch_size], samples=cfg.eval.sample_chunk,
                              fused=fused)  # warm-up
    start = time.perf_counter()
    ll = importance_log_likelihood(model, x, samples=k, batch_size=cfg.eval.batch_size,
                                   sample_chunk=cfg.eval.sample_chunk, fused=fused)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "mean_log_likelihood": round(ll.mean().item(), 4),
            "matmul": matmul}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a config file, or a run folder (its trained weights)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", default="fused,general",
                        help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--part", choices=list(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part:
        print(json.dumps(measure(args.config, args.k, args.images, args.part)))
        return
    sides = args.sides.split(",")
    if set(sides) - SIDES.keys() or not {"fused", "general"} <= set(sides):
        parser.error(f"--sides {args.sides}: choose from {', '.join(SIDES)}, fused and "
                     f"general among them")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.repeats):
        for part in sides if i % 2 == 0 else sides[::-1]:
            out = subprocess.run([sys.executable, __file__, args.config, "--k", str(args.k),
                                  "--images", str(args.images), "--threads",
                                  str(args.threads), "--part", part],
                                 check=True, capture_output=True, text=True).stdout
            runs[part].append(json.loads(out.splitlines()[-1]))
            print(part, runs[part][-1], flush=True)
    med = {p: statistics.median(r["seconds"] for r in rs) for p, rs in runs.items()}
    summary = {
        "command": f"python benchmarks/eval_speed.py {args.config} --k {args.k} --images "
                   f"{args.images} --threads {args.threads} --repeats {args.repeats}"
                   + (f" --sides {args.sides}" if args.sides != "fused,general" else ""),
        "sides": {side: SIDES[side] for side in sides},
        "torch": torch.__version__, "load_average_after": list(os.getloadavg()),
        "runs": runs,
        "median_seconds": med,
        "median_seconds_10k": {p: round(s * 10_000 / args.images, 1) for p, s in med.items()},
        "speed_up": round(med["general"] / med["fused"], 3),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"eval-speed-{Path(args.config).stem}-{args.threads}threads.json"
    if (ROOT / args.config).is_dir():
        out = out.with_name(f"eval-speed-run-{Path(args.config).name}-{args.threads}threads.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"median fused {med['fused']:.2f} s, general {med['general']:.2f} s "
          f"({summary['speed_up']:.2f}x); 10k test images at K={args.k}: "
          f"{summary['median_seconds_10k']['fused']:.0f} s fused, "
          f"{summary['median_seconds_10k']['general']:.0f} s general; wrote "
          f"{out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
