"""The hierarchical training step against a plain PyTorch loop of the same two-layer model.

    python benchmarks/hierarchical_speed.py --fresh 5 --rounds 5 --steps 10 --threads 1
    python benchmarks/hierarchical_speed.py --rounds 20 --steps 3 --threads 1   # one process
    python benchmarks/hierarchical_speed.py --side vaelab --set train.fused=false ...

Both train the model of configs/hierarchical.toml (two layers (100, 50), top-down ladder
inference, IWAE K=5, tanh MLPs, batch 100, Adam 1e-3) on the same MNIST batches. vaelab's
side is its training step as ``vaelab train`` runs it (``Trainer._step``: the objective, the
non-finite checks, Adam as the trainer builds it, after ``keep_freed_memory()``); the plain
loop is what one writes from the papers: ``torch.nn.Linear`` layers, the Gaussian
log-densities and the precision-weighted q by hand, no ``torch.distributions``,
``torch.optim.Adam``. With ``--side both`` (the default) rounds alternate (vaelab, plain,
vaelab, ...) in one process so both see the same machine load, medians of the per-round
step times are reported and benchmarks/results/hierarchical-speed.json is written; with
``--side vaelab`` or ``plain`` one side runs alone and prints its median ms (wall and CPU)
per step as one JSON line; ``--fresh N`` runs N such pairs in fresh processes, A B A B ...,
and records the medians of the pairwise ratios (the figure the docs quote: in one process
the side measured second inherits the first's heap, as benchmarks/README.md found).
``--set KEY=VALUE`` overrides the config (``train.fused=false``: vaelab's general path;
``model.inference=bottom-up``: the plain side then stays top-down, so compare vaelab
against itself).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.build import build_model, build_objective
from vaelab.config import load_config
from vaelab.data import binarize, load_dataset
from vaelab.schedules import Progress
from vaelab.training.heap import keep_freed_memory
from vaelab.training.matmul import resolve_matmul
from vaelab.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
LOG_2PI = math.log(2 * math.pi)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def log_normal(z: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - mu) / s) ** 2 - s.log() - 0.5 * LOG_2PI).sum(-1)


def scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + 1e-5


class PlainLadder(nn.Module):
    """The same networks and maths as HierarchicalVAE(top-down, ladder), written plainly."""

    def __init__(self, d1: int = 100, d2: int = 50):
        super().__init__()
        self.d2 = d2
        self.enc = mlp([784, 200, 200, 2 * d1])
        self.up = mlp([2 * d1, 100, 100, 2 * d2])
        self.down = mlp([d2, 100, 100, 2 * d1])
        self.dec = mlp([d1, 200, 200, 784])

    def loss(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x = x.flatten(1)
        h1 = self.enc(x)
        mu2, raw2 = self.up(h1).chunk(2, -1)
        s2 = scale(raw2)
        z2 = mu2 + s2 * torch.randn(k, *mu2.shape)
        mup, rawp = self.down(z2).chunk(2, -1)
        sp = scale(rawp)
        muh, rawh = h1.chunk(2, -1)
        sh = scale(rawh)
        prec_h, prec_p = sh.pow(-2), sp.pow(-2)
        var = 1 / (prec_h + prec_p)
        mu1, s1 = (muh * prec_h + mup * prec_p) * var, var.sqrt()
        z1 = mu1 + s1 * torch.randn_like(mu1)
        logits = self.dec(z1)
        log_px = (x * logits - F.softplus(logits)).sum(-1)
        log_w = (log_px + log_normal(z2, torch.zeros_like(z2), torch.ones_like(z2))
                 + log_normal(z1, mup, sp) - log_normal(z2, mu2, s2) - log_normal(z1, mu1, s1))
        return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()


def time_steps(step, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(wall, CPU) seconds per step: the process's CPU time is what a shared machine's
    time-slicing leaves out of the wall time."""
    start, cpu = time.perf_counter(), time.process_time()
    for xb in batches:
        step(xb)
    return ((time.perf_counter() - start) / len(batches),
            (time.process_time() - cpu) / len(batches))


def vaelab_side(config) -> tuple[object, object]:
    """vaelab's training step (``Trainer._step``) and its model."""
    keep_freed_memory()  # as the vaelab command does
    model = build_model(config.model, (1, 28, 28))
    resolve_matmul(config, model, rows=config.train.batch_size,
                   samples=config.objective.samples)  # train.matmul, as vaelab.fit does
    objective = build_objective(config.objective, (1, 28, 28), fused=config.train.fused)
    progress = Progress(step=10**6, epoch=1e6)  # after warm-up: beta = 1

    def step_fn(xb: torch.Tensor, progress: Progress):
        out = objective(model, xb, progress)
        return out.loss, out.metrics()

    trainer = Trainer(config.train, nn.ModuleList([model, objective]), step_fn)
    return (lambda xb: trainer._step(xb, progress)), model


def plain_side(config) -> tuple[object, object]:
    plain = PlainLadder()
    opt = torch.optim.Adam(plain.parameters(), lr=config.train.lr)
    k = config.objective.samples

    def plain_step(xb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        plain.loss(xb, k).backward()
        opt.step()

    return plain_step, plain


def fresh_pairs(args: argparse.Namespace) -> None:
    """A B A B ... in fresh processes (each side alone, so neither inherits the other's heap),
    ratios taken pair by pair so drift in the machine's speed cancels; writes the results."""
    runs: dict[str, list[dict]] = {"vaelab": [], "plain": []}
    base = [sys.executable, __file__, "--rounds", str(args.rounds), "--steps", str(args.steps),
            "--threads", str(args.threads), *[a for s in args.set for a in ("--set", s)]]
    for _ in range(args.fresh):
        for side in runs:
            out = subprocess.run([*base, "--side", side], check=True, capture_output=True,
                                 text=True).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
            print(side, runs[side][-1], flush=True)

    def paired(key: str) -> float:
        return round(statistics.median(p[key] / v[key] for v, p in
                                       zip(runs["vaelab"], runs["plain"], strict=True)), 3)

    result = {
        "command": (f"python benchmarks/hierarchical_speed.py --fresh {args.fresh} --rounds "
                    f"{args.rounds} --steps {args.steps} --threads {args.threads}"
                    + "".join(f" --set {s}" for s in args.set)),
        "model": "configs/hierarchical.toml: layers (100, 50), top-down ladder, IWAE K=5, "
                 "batch 100" + "".join(f", {s}" for s in args.set),
        "method": "fresh processes alternating vaelab, plain; each reports the median of its "
                  "rounds; speed-ups are medians of the pairwise ratios",
        "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
        "median_ms_per_step": {n: round(statistics.median(r["median_ms_per_step"]
                                                          for r in v), 2)
                               for n, v in runs.items()},
        "median_cpu_ms_per_step": {n: round(statistics.median(r["median_cpu_ms_per_step"]
                                                              for r in v), 2)
                                   for n, v in runs.items()},
        "speedup_vs_plain": paired("median_ms_per_step"),
        "speedup_vs_plain_cpu": paired("median_cpu_ms_per_step"),
        "load_average": [r["load_average"][0] for v in runs.values() for r in v],
        "runs": runs,
    }
    out = Path(__file__).parent / "results" / "hierarchical-speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--side", choices=("both", "vaelab", "plain"), default="both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", type=int, default=0, metavar="PAIRS",
                        help="run PAIRS of fresh processes, --side vaelab then --side plain, "
                             "and write the paired medians (the recorded figure)")
    args = parser.parse_args()
    if args.fresh:
        fresh_pairs(args)
        return
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "configs" / "hierarchical.toml", args.set)
    batch = config.train.batch_size
    torch.manual_seed(0)
    x = load_dataset("mnist", "train").x[: batch * args.steps]
    batches = [binarize(x[i: i + batch]) for i in range(0, x.shape[0], batch)]
    sides = {"vaelab": vaelab_side, "plain": plain_side}
    names = list(sides) if args.side == "both" else [args.side]
    steps, models = {}, {}
    for name in names:
        steps[name], models[name] = sides[name](config)
    if args.side == "both":
        sizes = {sum(p.numel() for p in m.parameters()) for m in models.values()}
        assert len(sizes) == 1, "the two models must be the same size"
    for name in names:  # warm up
        time_steps(steps[name], batches[:3])
    load_before = os.getloadavg()[0]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            w, c = time_steps(steps[name], batches)
            wall[name].append(w)
            cpu[name].append(c)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    def ms(values: list[float]) -> float:
        return round(1000 * statistics.median(values), 2)

    if args.side != "both":
        print(json.dumps({"side": args.side, "set": args.set, "threads": args.threads,
                          "median_ms_per_step": ms(wall[args.side]),
                          "median_cpu_ms_per_step": ms(cpu[args.side]),
                          "load_average": load}))
        return
    result = {
        "command": (f"python benchmarks/hierarchical_speed.py --rounds {args.rounds} "
                    f"--steps {args.steps} --threads {args.threads}"
                    + "".join(f" --set {s}" for s in args.set)),
        "model": "configs/hierarchical.toml: layers (100, 50), top-down ladder, IWAE K=5, "
                 f"batch {batch}" + "".join(f", {s}" for s in args.set),
        "threads": args.threads, "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_before_after": load,
        "median_ms_per_step": {n: ms(v) for n, v in wall.items()},
        "median_cpu_ms_per_step": {n: ms(v) for n, v in cpu.items()},
        "round_ms_per_step": {n: [round(1000 * t, 2) for t in v] for n, v in wall.items()},
        # pair by pair (each vaelab round with the plain round after it): drift cancels
        "speedup_vs_plain": round(statistics.median(
            p / v for p, v in zip(wall["plain"], wall["vaelab"], strict=True)), 3),
        "speedup_vs_plain_cpu": round(statistics.median(
            p / v for p, v in zip(cpu["plain"], cpu["vaelab"], strict=True)), 3),
    }
    out = Path(__file__).parent / "results" / "hierarchical-speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
