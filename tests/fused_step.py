"""One training step's loss terms and parameter gradients, for comparing a fused path with
the general one on the same noise (tests/inference/test_fused_*.py, test_layered_fused.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaelab.schedules import Progress


def one_step(model: nn.Module, objective: Any, x: torch.Tensor, progress: Progress,
             seed: int = 7) -> tuple[Any, dict[str, torch.Tensor]]:
    """(objective output, {parameter name: gradient}) of one backward pass from fresh
    gradients, with the random stream reset to ``seed`` so both paths draw the same z."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = objective(model, x, progress)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}
