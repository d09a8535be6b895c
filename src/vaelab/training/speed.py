"""Training-speed options for networks: bf16 autocast and torch.compile, in training only.

Both wrap a network's ``forward`` in place (as Hugging Face accelerate does for mixed
precision), so parameter names, checkpoints and the ``encode``/``decode`` API are
unchanged. The wrapped forward dispatches on ``module.training``: evaluation (validation,
test numbers, pictures) always runs the plain float32 eager forward.

* ``precision="bf16"``: the network runs under ``torch.autocast(dtype=torch.bfloat16)``
  (matrix products in bfloat16; CPUs with AVX-512 BF16 or AMX run them natively) and its
  output is cast back to float32, so densities, KL and the loss are computed in float32.
* ``compile=True``: the training forward goes through ``torch.compile`` (inductor; on CPU
  it needs a C compiler). The first steps pay for compilation.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from vaelab.config import ConfigError

PRECISIONS = ("float32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be float32 or bf16, got '{precision}'")


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out.float()
    if isinstance(out, tuple | list):
        return type(out)(_to_float32(o) for o in out)
    return out


def _autocast(forward: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float32(out)

    return run


def _compiled(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(forward)``, silencing two notices torch itself raises while tracing
    (inductor's import-time deprecation; dynamo reading ``.grad`` of a non-leaf input)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script_method",
                                category=DeprecationWarning)
        compiled = torch.compile(forward)

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that "
                                    "is not a leaf Tensor", category=UserWarning)
            return compiled(*args, **kwargs)

    return run


def accelerate(modules: Iterable[nn.Module], *, precision: str = "float32",
               compile: bool = False, device_type: str = "cpu") -> None:
    """Give each module a training-mode forward with the chosen precision / compilation."""
    check_precision(precision)
    if precision == "float32" and not compile:
        return
    for module in modules:
        eager = module.forward
        fast = _autocast(eager, device_type) if precision == "bf16" else eager
        if compile:
            fast = _compiled(fast)

        def forward(*args: Any, _m: nn.Module = module, _eager=eager, _fast=fast,
                    **kwargs: Any) -> Any:
            return (_fast if _m.training else _eager)(*args, **kwargs)

        module.forward = forward  # an instance attribute: state_dict keys do not change
