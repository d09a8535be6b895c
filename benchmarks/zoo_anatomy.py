"""Where a training step of one zoo row goes, for vaelab and for the plain loop of zoo.py.

    python benchmarks/zoo_anatomy.py configs/seeds/002_conv.toml [--threads 2] [--steps 20]

Profiles ``--steps`` training steps of each side (after warm-up) with ``torch.profiler``
and sums the operators' own CPU time into a few kinds: matrix products and convolutions
(forward and backward), element-wise and reduction kernels, the optimizer, random numbers,
copies and layout changes, and everything else (Python, autograd bookkeeping, dispatch:
the step's wall time minus its kernels). The step time is the mean of the profiled steps,
so it includes the profiler's own overhead; compare the two sides, not absolute numbers.
Prints a markdown table; ``--json`` writes benchmarks/results/anatomy-<config>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from zoo import PlainVAE, bench_config

RESULTS = Path(__file__).parent / "results"

KINDS = [  # (kind, substrings of aten op names), first match wins
    ("products (GEMM, conv)", ("mm", "linear", "conv", "mkldnn", "bmm", "baddbmm", "einsum")),
    ("optimizer", ("adam", "_foreach", "sqrt", "lerp", "addcdiv")),
    ("random numbers", ("rand", "bernoulli", "normal", "exponential", "uniform")),
    ("copies and layout", ("copy", "contiguous", "clone", "to_dense", "reorder", "cat",
                           "index", "gather", "scatter", "stack", "zero", "fill")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "element-wise and reductions"


def make_steps(path: Path, side: str):
    """A zero-argument training step of one side, on one fixed batch of the training data."""
    from vaelab import rng
    from vaelab.build import build_model, build_objective
    from vaelab.data.prepare import limit_rows, load_split
    from vaelab.schedules import Progress
    from vaelab.training.heap import keep_freed_memory
    from vaelab.training.matmul import resolve_matmul
    from vaelab.training.trainer import Trainer

    cfg = bench_config(path, 10, 2)
    torch.manual_seed(cfg.train.seed)
    train = limit_rows(load_split(cfg, cfg.data.train_split), 4 * cfg.train.batch_size)
    x = train.x.float().contiguous()
    ours = build_model(cfg.model, train.event_shape, data_mean=x.mean(0), data_x=x)
    xb = x[:cfg.train.batch_size]
    dynamic = cfg.model.likelihood == "bernoulli" and cfg.data.binarize == "dynamic"
    if side == "plain":
        model = PlainVAE(cfg, tuple(train.event_shape), ours)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

        def plain_step() -> None:
            batch = torch.bernoulli(xb) if dynamic else xb
            loss = model.loss(batch, 1.0, cfg.objective.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return plain_step
    keep_freed_memory()  # as the vaelab command does
    resolve_matmul(cfg, ours, rows=cfg.train.batch_size,
                   samples=cfg.objective.samples)  # train.matmul, as vaelab.fit does
    objective = build_objective(cfg.objective, train.event_shape,
                                discrete=ours.posterior.discrete, fused=cfg.train.fused)

    def step_fn(batch: torch.Tensor, progress: Progress):
        out = objective(ours, rng.bernoulli(batch) if dynamic else batch, progress)
        return out.loss, out.metrics()

    trainer = Trainer(cfg.train, nn.ModuleList([ours, objective]), step_fn)
    progress = Progress(step=0, epoch=0.0)
    return lambda: trainer._step(xb, progress)


def anatomy(step, steps: int) -> dict:
    for _ in range(10):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps * 1e3
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("mkldnn::"):
            kinds[kind_of(event.key)] += event.self_cpu_time_total / 1e3 / steps
    kernels = sum(kinds.values())  # each op's own time on the calling thread
    return {"step_ms": round(wall, 3),
            "kinds_ms": {k: round(v, 3) for k, v in sorted(kinds.items())},
            "other_ms": round(max(0.0, wall - kernels), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.config)
    result = {side: anatomy(make_steps(path, side), args.steps) for side in ("plain", "vaelab")}
    kinds = sorted({k for side in result.values() for k in side["kinds_ms"]})
    print(f"| {path.stem}, ms per step ({args.threads} threads) | plain loop | vaelab |")
    print("| --- | --- | --- |")
    print(f"| whole step | {result['plain']['step_ms']:.2f} | {result['vaelab']['step_ms']:.2f} |")
    for k in kinds:
        print(f"| {k} | {result['plain']['kinds_ms'].get(k, 0):.2f} | "
              f"{result['vaelab']['kinds_ms'].get(k, 0):.2f} |")
    print(f"| the rest (Python, autograd, dispatch) | {result['plain']['other_ms']:.2f} | "
          f"{result['vaelab']['other_ms']:.2f} |")
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"anatomy-{path.stem}.json").write_text(json.dumps(
            {"config": str(path), "threads": args.threads, **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
