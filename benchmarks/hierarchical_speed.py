"""The hierarchical training step against a plain PyTorch loop of the same two-layer model.

    python benchmarks/hierarchical_speed.py                    # configs/hierarchical.toml
    python benchmarks/hierarchical_speed.py --rounds 7 --steps 40 --threads 1

Both train the model of configs/hierarchical.toml (two layers (100, 50), top-down ladder
inference, IWAE K=5, tanh MLPs, batch 100, Adam 1e-3) on the same MNIST batches. The plain
loop is what one writes from the papers: ``torch.nn.Linear`` layers, the Gaussian
log-densities and the precision-weighted q by hand, no ``torch.distributions``. Rounds
alternate (vaelab, plain, vaelab, ...) in one process so both see the same machine load;
medians of the per-round step times are reported. Writes
benchmarks/results/hierarchical-speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.build import build_model, build_objective
from vaelab.config import load_config
from vaelab.data import binarize, load_dataset
from vaelab.schedules import Progress

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


def time_steps(step, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for xb in batches:
        step(xb)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "configs" / "hierarchical.toml")
    k, batch = config.objective.samples, config.train.batch_size
    torch.manual_seed(0)
    x = load_dataset("mnist", "train").x[: batch * args.steps]
    batches = [binarize(x[i: i + batch]) for i in range(0, x.shape[0], batch)]

    model = build_model(config.model, (1, 28, 28))
    objective = build_objective(config.objective, (1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    progress = Progress(step=10**6, epoch=1e6)  # after warm-up: beta = 1

    def vaelab_step(xb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        objective(model, xb, progress).loss.backward()
        opt.step()

    plain = PlainLadder()
    plain_opt = torch.optim.Adam(plain.parameters(), lr=config.train.lr)

    def plain_step(xb: torch.Tensor) -> None:
        plain_opt.zero_grad(set_to_none=True)
        plain.loss(xb, k).backward()
        plain_opt.step()

    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in plain.parameters()), "the two models must be the same size"
    time_steps(vaelab_step, batches[:3])  # warm both up
    time_steps(plain_step, batches[:3])
    times: dict[str, list[float]] = {"vaelab": [], "plain": []}
    for _ in range(args.rounds):
        times["vaelab"].append(time_steps(vaelab_step, batches))
        times["plain"].append(time_steps(plain_step, batches))
    med = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "command": f"python benchmarks/hierarchical_speed.py --rounds {args.rounds} "
                   f"--steps {args.steps} --threads {args.threads}",
        "model": "configs/hierarchical.toml: layers (100, 50), top-down ladder, IWAE K=5, "
                 f"batch {batch}",
        "threads": args.threads, "torch": torch.__version__,
        "machine": platform.machine(),
        "median_ms_per_step": {n: round(1000 * v, 2) for n, v in med.items()},
        "round_ms_per_step": {n: [round(1000 * t, 2) for t in v] for n, v in times.items()},
        "speedup_vs_plain": round(med["plain"] / med["vaelab"], 3),
    }
    out = Path(__file__).parent / "results" / "hierarchical-speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
