"""Every private PyTorch entry point vaelab's fast paths use, each behind one named function.

Why: private names (``torch._foreach_norm``, ``torch.ops.mkldnn._linear_pointwise``,
``module._forward_hooks``, ...) can change or vanish in any PyTorch release. Each one is
used here only, with a fallback to the public path computing the same thing; the fallback is
taken when the private name is missing, and everywhere under :func:`public_only` (tests force
it and check equal results: ``tests/models/test_torch_private.py``) or with the environment
variable ``VAELAB_TORCH_PRIVATE=off``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_enabled = os.environ.get("VAELAB_TORCH_PRIVATE", "on") != "off"


def private_enabled() -> bool:
    """Whether private entry points may be used (off under :func:`public_only`)."""
    return _enabled


@contextlib.contextmanager
def public_only() -> Iterator[None]:
    """Within this block every function here takes its public fallback."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _private(obj: object, name: str) -> object | None:
    return getattr(obj, name, None) if _enabled else None


def tensor_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The 2-norm of each tensor: one ``torch._foreach_norm`` kernel launch for all of them,
    else ``torch.linalg.vector_norm`` per tensor."""
    fn = _private(torch, "_foreach_norm")
    if fn is not None:
        return list(fn(list(tensors)))  # type: ignore[operator]
    return [torch.linalg.vector_norm(t) for t in tensors]


def scale_(tensors: Sequence[torch.Tensor], factor: float) -> None:
    """Multiply each tensor in place by ``factor`` (``torch._foreach_mul_``, else ``mul_``)."""
    fn = _private(torch, "_foreach_mul_")
    if fn is not None:
        fn(list(tensors), factor)  # type: ignore[operator]
        return
    for t in tensors:
        t.mul_(factor)


def relu_backward(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """dL/dy of h = relu(y) from dL/dh and h: one kernel (``aten.threshold_backward``), else
    ``grad * (h > 0)``."""
    aten = _private(torch.ops, "aten")
    if aten is not None:
        return aten.threshold_backward(grad, out, 0)  # type: ignore[attr-defined]
    return grad * (out > 0).to(grad.dtype)


def tanh_backward(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """dL/dy of h = tanh(y) from dL/dh and h: ``aten.tanh_backward``, else
    ``grad * (1 - h^2)``."""
    aten = _private(torch.ops, "aten")
    if aten is not None:
        return aten.tanh_backward(grad, out)  # type: ignore[attr-defined]
    return grad * (1 - out * out)


def plain_module(module: nn.Module) -> bool:
    """No forward hooks and no replaced ``forward`` anywhere in ``module`` (a fused path
    may then skip calling its submodules). Without the private hook dicts it answers False:
    the caller takes its general path, which honours hooks."""
    if not _enabled or _global_hooks():
        return False
    for m in module.modules():
        hooks = (getattr(m, "_forward_hooks", None), getattr(m, "_forward_pre_hooks", None))
        if hooks[0] is None or hooks[1] is None:  # private names gone: assume hooks
            return False
        if hooks[0] or hooks[1] or "forward" in vars(m):
            return False
    return True


def _global_hooks() -> bool:
    """Hooks registered for every module (``register_module_forward_hook``)."""
    hooks = getattr(nn.modules.module, "_global_forward_hooks", None)
    pre = getattr(nn.modules.module, "_global_forward_pre_hooks", None)
    return bool(hooks) or bool(pre) or hooks is None or pre is None


_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def onednn_linear_op() -> Callable[..., torch.Tensor] | None:
    """``torch.ops.mkldnn._linear_pointwise`` (a oneDNN GEMM with a fused activation), or None
    when it is missing or private entry points are off."""
    return _LINEAR if _enabled else None


def linear_pointwise(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     act: str = "none") -> torch.Tensor:
    """act(a W^T + b), act one of none, relu, tanh: one oneDNN call, else ``F.linear`` and the
    activation."""
    op = onednn_linear_op()
    if op is not None:
        return op(a, weight, bias, act, [], "")
    out = F.linear(a, weight, bias)
    if act == "none":
        return out
    return F.relu(out) if act == "relu" else torch.tanh(out)
