"""Where one training step of the default model goes, and what bounds its GEMM rate.

    python benchmarks/step_anatomy.py --threads 1
    python benchmarks/step_anatomy.py --threads 2

Times, on an idle machine, best of several repeats:
1. vaelab's whole training step (forward, backward, non-finite checks, fused Adam) at the
   default batch of 128 and at a batch of 2; at 128 also with ``train.fused=false``, the
   general autograd path instead of the fused ELBO (the two alternate). At batch 2 the
   products cost almost nothing, but the step still reads and writes every parameter,
   gradient and Adam moment, and pays every kernel launch and Python call: that time does
   not shrink with the batch.
2. The step's 11 matrix products alone (oneDNN, the shapes and transposed views the
   backward uses), and its other fixed parts alone: fused Adam, the gradient-norm check,
   the Bernoulli binarization of a batch.
3. The GEMM rate the step could reach if everything that grows with the batch besides the
   products were free: GEMM FLOPs / (products alone + the batch-2 step's non-GEMM time),
   against the best large-GEMM rate of this CPU (as ``benchmarks/throughput.py`` measures
   it).
Writes benchmarks/results/step-anatomy-<N>threads.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from throughput import peak_gemm_gflops, training_gemm_flops_per_image
from torch import nn

from vaelab.build import build_model, build_objective
from vaelab.config import Config
from vaelab.data import binarize, load_dataset
from vaelab.models.fastlinear import ENABLED as ONEDNN_ENABLED
from vaelab.schedules import Progress
from vaelab.training.heap import keep_freed_memory
from vaelab.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
SIZES = [(784, 512), (512, 40), (20, 512), (512, 784)]  # the default model's layers


def best_ms(fn: Callable[[], object], repeats: int = 7, n: int = 100) -> float:
    """Best over ``repeats`` of the mean time of ``n`` calls, in ms."""
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e3


def default_trainer(x: torch.Tensor, fused: bool = True) -> Trainer:
    config = Config()
    model = build_model(config.model, x.shape[1:], data_mean=x.mean(0), data_x=x)
    # fused (train.fused): the one-node ELBO (inference/fused_elbo.py), else autograd's general path
    objective = build_objective(config.objective, x.shape[1:], discrete=False, fused=fused)

    def step_fn(batch: torch.Tensor, progress: Progress):
        out = objective(model, binarize(batch, check=False), progress)
        return out.loss, out.metrics()

    return Trainer(config.train, nn.ModuleList([model, objective]), step_fn)


def gemms_alone(batch: int) -> float:
    """ms for the 11 products of one step: y = x W^T per layer, dx = g W (not for the
    first layer) and dW = g^T x, with the operands laid out as the backward has them."""
    op = torch.ops.mkldnn._linear_pointwise
    calls = []
    for i, (fan_in, fan_out) in enumerate(SIZES):
        x, w, g = torch.randn(batch, fan_in), torch.randn(fan_out, fan_in), \
            torch.randn(batch, fan_out)
        b = torch.randn(fan_out)
        calls.append(lambda x=x, w=w, b=b: op(x, w, b, "none", [], ""))
        if i > 0:
            calls.append(lambda g=g, w=w: op(g, w.t(), None, "none", [], ""))
        calls.append(lambda g=g, x=x: op(g.t(), x.t(), None, "none", [], ""))

    def run() -> None:
        for call in calls:
            call()

    return best_ms(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as vaelab train does
    torch.manual_seed(0)
    x = load_dataset("mnist", "train").x
    trainer = default_trainer(x)
    progress = Progress(0, 0)
    general = default_trainer(x, fused=False)
    full = general_ms = float("inf")
    for _ in range(3):  # alternate, so a change in the machine's speed hits both alike
        full = min(full, best_ms(lambda: trainer._step(x[:args.batch], progress)))
        general_ms = min(general_ms, best_ms(lambda: general._step(x[:args.batch], progress)))
    small = best_ms(lambda: trainer._step(x[:2], progress))
    trainer._step(x[:args.batch], progress)  # leave gradients in place for the parts below
    grads = [p.grad for p in trainer.module.parameters() if p.grad is not None]
    optimizer = trainer.optimizer
    parts = {
        "fused Adam step": best_ms(optimizer.step),
        "gradient-norm check": best_ms(lambda: torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm(grads))).item()),
        f"binarize a batch of {args.batch}": best_ms(lambda: binarize(x[:args.batch],
                                                                    check=False)),
    }
    gemm = gemms_alone(args.batch) if ONEDNN_ENABLED else float("nan")
    gemm_small = gemms_alone(2) if ONEDNN_ENABLED else float("nan")
    flops = training_gemm_flops_per_image(SIZES) * args.batch
    peak = max(peak_gemm_gflops().values())
    reached = flops / (full * 1e-3) / 1e9
    # the batch-2 step minus its own products: what the step costs besides GEMMs at any batch
    bound = flops / ((small - gemm_small + gemm) * 1e-3) / 1e9
    result = {
        "threads": args.threads, "batch": args.batch, "torch": torch.__version__,
        "step_ms": round(full, 3), "step_ms_general_path": round(general_ms, 3),
        "step_ms_batch_2": round(small, 3),
        "gemms_alone_ms": round(gemm, 3), "gemms_alone_ms_batch_2": round(gemm_small, 3),
        "parts_ms": {k: round(v, 3) for k, v in parts.items()},
        "gemm_flops_per_step": flops, "peak_gemm_gflops": round(peak, 1),
        "gemm_fraction_reached": round(reached / peak, 3),
        "gemm_fraction_bound": round(bound / peak, 3),
        "images_per_sec": round(args.batch / (full * 1e-3)),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"step-anatomy-{args.threads}threads.json").write_text(
        json.dumps(result, indent=2) + "\n")
    print(f"| {args.threads} thread(s), batch {args.batch} | ms |\n|---|---|")
    print(f"| whole training step | {full:.3f} ({result['images_per_sec']:,} images/s) |")
    print(f"| the same with train.fused=false (autograd through the general path) | "
          f"{general_ms:.3f} |")
    print(f"| whole step at batch 2 (does not shrink with the batch) | {small:.3f} |")
    print(f"| the 11 products alone | {gemm:.3f} |")
    print(f"| the 11 products alone at batch 2 | {gemm_small:.3f} |")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"\nGEMM rate reached: {reached:.0f} GFLOP/s = {reached / peak:.0%} of {peak:.0f}; "
          f"bound if nothing but the batch-2 step's non-GEMM work were added to the products: "
          f"{bound / peak:.0%}")


if __name__ == "__main__":
    main()
