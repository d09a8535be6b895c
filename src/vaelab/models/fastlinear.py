"""A float32 linear layer that runs forward and backward on oneDNN's matmul on the CPU.

Why: on CPUs where PyTorch's default GEMM (MKL) takes a slow path — measured here on an AMD
Zen 5 at 35-150 GFLOP/s for a VAE's (128 x 784) x (784 x 512) products — oneDNN's kernels
reach 250-450 GFLOP/s at the same shapes, in plain float32 (no reduced precision). PyTorch
uses oneDNN for float32 linear layers only at inference time, so this module routes the three
training GEMMs (y = x W^T + b, dx = dy W, dW = dy^T x) through ``mkldnn._linear_pointwise``
with transposed *views* (oneDNN reads strided operands; copying them would cost more than
the product). Anything else (float64, CUDA, a PyTorch without the op) uses ``F.linear``.

``benchmarks/throughput.py`` measures the effect; ``VAELAB_MATMUL=default`` switches it off,
and so does :func:`vaelab.models.torch_private.public_only` (the op is private).
"""

from __future__ import annotations

import os

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


ENABLED = os.environ.get("VAELAB_MATMUL", "onednn") != "default" and _onednn_available()


def onednn_for(t: torch.Tensor) -> bool:
    """Whether products with ``t`` run on oneDNN: float32 on the CPU, the op available and
    private entry points allowed (``torch_private.public_only``)."""
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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with oneDNN GEMMs for float32 CPU tensors."""
    if (onednn_for(x) and weight.dtype == torch.float32 and x.dim() >= 2 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()):  # compiled graphs: inductor picks kernels
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in ``nn.Linear`` (same parameters and state dict) using :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
