"""oneDNN's matmul against torch's own GEMM (MKL) at the VAE's product shapes, per product.

    python benchmarks/matmul.py --threads 2       # writes results/matmul-2threads.json

The three products of a linear layer with ``rows`` inputs (forward y = x W^T, input
gradient dx = g W, weight gradient dW = g^T x) on both libraries, as vaelab calls them
(``models/fastlinear.py``: oneDNN's ``_linear_pointwise`` on transposed views, torch's
``@`` on the same views), GFLOP/s of the best of ``--repeats`` timed loops, the libraries
alternating. Which library wins depends on the machine (fastlinear's docstring); this is
what ``train.matmul=auto`` measures in small when a run starts, printed in full.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from step_anatomy import best_ms

from vaelab.models import fastlinear

RESULTS = Path(__file__).parent / "results"
# (rows, in, out): the default model (batch 128, 784-512-20), configs/paper*.toml
# (batch 100, 784-500-500-50; IWAE K=50: 5000 decoder rows), the hierarchy (200, 100 wide)
SHAPES = [(128, 784, 512), (128, 512, 40), (128, 20, 512), (128, 512, 784),
          (100, 784, 500), (100, 500, 500), (100, 500, 100), (100, 50, 500),
          (5000, 500, 500), (5000, 500, 784), (500, 200, 200), (500, 100, 100)]


def products(shape: tuple[int, int, int]) -> dict[str, dict]:
    rows, n_in, n_out = shape
    x, w, g = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(rows, n_out)
    return {
        "forward": {"onednn": lambda: fastlinear._mm_t(x, w), "torch": lambda: x @ w.t()},
        "input grad": {"onednn": lambda: fastlinear._mm_t(g, w.t()), "torch": lambda: g @ w},
        "weight grad": {"onednn": lambda: fastlinear._mm_t(g.t(), x.t()),
                        "torch": lambda: g.t() @ x},
    }


def gflops(fn, flop: float, seconds: float, repeats: int) -> float:
    """GFLOP/s of ``fn`` (``flop`` per call): the best of ``repeats`` loops of ~``seconds``."""
    fn()
    n = 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 10:  # calls per loop: ~1/10 of the budget
        fn()
        n += 1
    return flop / (best_ms(fn, repeats, n) / 1e3) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.05, help="per timed loop")
    args = parser.parse_args()
    if not fastlinear.ENABLED:
        raise SystemExit("oneDNN's _linear_pointwise is not available in this PyTorch")
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'rows x in x out':>18} {'product':>12} {'oneDNN':>8} {'torch':>8}  GFLOP/s")
    with torch.no_grad():
        for shape in SHAPES:
            flop = 2.0 * shape[0] * shape[1] * shape[2]
            for product, libs in products(shape).items():
                rate = {}
                for lib in ("onednn", "torch"):  # alternate per product
                    rate[lib] = gflops(libs[lib], flop, args.seconds, args.repeats)
                rows.append({"shape": list(shape), "product": product,
                             **{k: round(v, 1) for k, v in rate.items()}})
                print(f"{'x'.join(map(str, shape)):>18} {product:>12} {rate['onednn']:8.0f} "
                      f"{rate['torch']:8.0f}")
    ms = {lib: 1e3 * sum(2.0 * r["shape"][0] * r["shape"][1] * r["shape"][2] / (r[lib] * 1e9)
                         for r in rows) for lib in ("onednn", "torch")}
    print(f"one pass of every product above: oneDNN {ms['onednn']:.2f} ms, torch "
          f"{ms['torch']:.2f} ms (torch / oneDNN time: {ms['torch'] / ms['onednn']:.2f})")
    out = RESULTS / f"matmul-{args.threads}threads.json"
    out.write_text(json.dumps({
        "command": f"python benchmarks/matmul.py --threads {args.threads}",
        "torch": torch.__version__, "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "ms_all_products": {k: round(v, 3) for k, v in ms.items()}, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(Path(__file__).parent.parent)}")


if __name__ == "__main__":
    main()
