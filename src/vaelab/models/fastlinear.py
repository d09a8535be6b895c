"""A float32 linear layer whose products run on oneDNN's matmul or on torch's own GEMM,
whichever is faster for the model on this machine.

Why: which GEMM library is faster depends on the CPU, its microcode and MKL's code paths,
not on the model alone. Measured on AMD Zen 5 machines of this project on different days:
once MKL took a slow path (35-150 GFLOP/s for a VAE's (128 x 784) x (784 x 512) products)
where oneDNN's kernels reached 250-450 GFLOP/s; on another day MKL ran at 350-400 GFLOP/s,
equal to oneDNN's forward products and 1.2-4x its weight-gradient products (oneDNN
copies the transposed operands). So ``train.matmul = "auto"`` (the default) times both on
the model's own product shapes when a run starts (:func:`fastest_matmul`, ~0.1 s) and
keeps the faster; the run's config.toml records the choice, so a resumed run, a
data-parallel rank (rank 0 decides) and ``load_run`` multiply on the same library.

PyTorch uses oneDNN for float32 linear layers only at inference time, so the oneDNN route
sends the three training GEMMs (y = x W^T + b, dx = dy W, dW = dy^T x) through
``mkldnn._linear_pointwise`` with transposed *views*. Anything else (float64, CUDA, a
PyTorch without the op, :func:`vaelab.models.torch_private.public_only`) uses
``F.linear``. ``VAELAB_MATMUL=default`` (or ``torch``) makes ``auto`` pick torch's GEMM
without timing, ``VAELAB_MATMUL=onednn`` oneDNN; ``benchmarks/zoo.py`` measures the effect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.models import torch_private


def _onednn_available() -> bool:
    op = torch_private.onednn_linear_op()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        op(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")
    except (RuntimeError, NotImplementedError):
        return False
    return True


Matmul = Literal["onednn", "torch"]
ENV_CHOICE: dict[str, Matmul] = {"default": "torch", "torch": "torch", "onednn": "onednn"}
ENABLED = _onednn_available()  # the op exists and runs (private entry points allowed)


def onednn_for(t: torch.Tensor) -> bool:
    """Whether products with ``t`` can run on oneDNN: float32 on the CPU, the op available
    and private entry points allowed (``torch_private.public_only``)."""
    return ENABLED and torch_private.private_enabled() and t.dtype == torch.float32 \
        and t.device.type == "cpu"


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T on oneDNN (a: (M, K), b: (N, K), either may be a strided view)."""
    return torch_private.linear_pointwise(a, b, None)


def _mm_t_differentiable(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.t()


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        out = torch_private.linear_pointwise(x2, weight, bias)
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x2, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        # create_graph=True (double backward, e.g. a semi-amortized VAE): the oneDNN op has
        # no autograd formula, so use differentiable matmuls there
        mm_t = _mm_t_differentiable if torch.is_grad_enabled() else _mm_t
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = mm_t(g2, weight.t()).view(*grad_out.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = mm_t(g2.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           onednn: bool = True) -> torch.Tensor:
    """``F.linear``, with oneDNN GEMMs for float32 CPU tensors when ``onednn``."""
    if (onednn and onednn_for(x) and weight.dtype == torch.float32 and x.dim() >= 2
            and x.numel() > 0
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()):  # compiled graphs: inductor picks kernels
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in ``nn.Linear`` (same parameters and state dict) using :func:`linear`; its
    products run on ``self.matmul`` (set by :func:`set_matmul`; not part of the state)."""

    matmul: Matmul = "onednn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.matmul == "onednn")


def set_matmul(model: nn.Module, matmul: Matmul) -> None:
    """Run every :class:`Linear` in ``model`` on ``matmul`` (the fused paths follow it)."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.matmul = matmul


def on_torch_gemm(layers: Sequence[nn.Module]) -> bool:
    """Whether a fused path over ``layers`` multiplies on torch's GEMM: unless every one is
    a :class:`Linear` set to oneDNN (the fused paths take one library for all their
    products)."""
    return not all(getattr(layer, "matmul", "torch") == "onednn" for layer in layers)


def product_shapes(model: nn.Module, rows: int, decoder_rows: int | None = None,
                   decoder: nn.Module | None = None) -> list[tuple[int, int, int]]:
    """(rows, in, out) of each :class:`Linear` in ``model``: ``decoder_rows`` (e.g. batch x
    K samples) for those inside ``decoder``, ``rows`` for the others."""
    inside = {id(m) for m in decoder.modules()} if decoder is not None else set()
    return [(decoder_rows if decoder_rows and id(m) in inside else rows,
             m.in_features, m.out_features)
            for m in model.modules() if isinstance(m, Linear)]


def _products(shape: tuple[int, int, int], onednn: bool) -> Callable[[], None]:
    """One training step's three products of a (rows, in, out) layer on one library."""
    rows, n_in, n_out = shape
    gen = torch.Generator().manual_seed(0)  # its own stream: the run's draws stay as seeded
    x, w, g = (torch.randn(*size, generator=gen)
               for size in ((rows, n_in), (n_out, n_in), (rows, n_out)))
    if onednn:
        def run() -> None:
            _mm_t(x, w)  # y = x W^T
            _mm_t(g, w.t())  # dx = g W
            _mm_t(g.t(), x.t())  # dW = g^T x
    else:
        def run() -> None:
            x @ w.t()
            g @ w
            g.t() @ x
    return run


def time_matmuls(shapes: Sequence[tuple[int, int, int]], repeats: int = 5
                 ) -> dict[Matmul, float]:
    """Seconds for one pass of every shape's three products on each library: the best of
    ``repeats`` passes, the libraries alternating pass by pass (so a burst of load on a
    shared machine hits both alike)."""
    runs = {lib: [_products(s, lib == "onednn") for s in shapes]
            for lib in ("onednn", "torch")}
    best: dict[Matmul, float] = {"onednn": float("inf"), "torch": float("inf")}
    for i in range(repeats + 1):  # the first pass warms caches and thread pools
        for lib in ("onednn", "torch") if i % 2 else ("torch", "onednn"):
            start = time.perf_counter()
            for run in runs[lib]:
                run()
            if i:
                best[lib] = min(best[lib], time.perf_counter() - start)
    return best


MARGIN = 0.95  # oneDNN (private op) must be 5% faster to be chosen; ties go to torch's GEMM
_CHOSEN: dict[tuple, tuple[Matmul, dict[Matmul, float]]] = {}


def fastest_matmul(shapes: Sequence[tuple[int, int, int]],
                   timer: Callable[[Sequence[tuple[int, int, int]]], dict[Matmul, float]]
                   = time_matmuls) -> tuple[Matmul, dict[Matmul, float]]:
    """The faster library for these products on this machine, and the timings (s).

    ``VAELAB_MATMUL`` (default/torch, onednn) decides without timing; no oneDNN (or no
    shapes) means torch. The answer is kept per shapes and thread count for the process,
    so two runs of one config in one process multiply alike."""
    env = os.environ.get("VAELAB_MATMUL", "")
    if env in ENV_CHOICE:
        return ENV_CHOICE[env], {}
    if not shapes or not ENABLED or not torch_private.private_enabled():
        return "torch", {}
    key = (tuple(shapes), torch.get_num_threads())
    if key not in _CHOSEN:
        with torch.no_grad():
            timings = timer(shapes)
        choice: Matmul = "onednn" if timings["onednn"] < MARGIN * timings["torch"] else "torch"
        _CHOSEN[key] = choice, timings
    return _CHOSEN[key]
