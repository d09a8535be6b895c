"""Baselines (control variates) for the score-function estimator.

The score-function gradient E_q[(f(z) - b) grad log q(z|x)] stays unbiased for any b that
does not depend on the sample z it multiplies, because E_q[grad log q] = 0; a b close to f
removes most of the variance. Each baseline is a small module with

* ``value(x, f)``: b, broadcastable to f's shape (K, B); it never looks at the z it weights
  (x may be None for baselines that do not read it: all but NVIL);
* ``scale()``: a positive divisor of the learning signal (1 except NVIL's normalisation);
* ``loss(x, f)``: its own training step — a differentiable loss for its parameters (zero
  for parameter-free baselines) plus running-statistics updates in training mode.

``f`` is always passed detached; the estimator adds ``loss`` to the training loss with zero
value, so its gradient reaches only the baseline's parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelab.config import ConfigError


class Baseline(nn.Module):
    """No baseline: b = 0."""

    name = "none"

    def value(self, x: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=f.dtype, device=f.device)

    def scale(self) -> torch.Tensor | float:
        return 1.0

    def loss(self, x: torch.Tensor | None, f: torch.Tensor, signal: torch.Tensor | None = None
             ) -> torch.Tensor:
        return torch.zeros((), dtype=f.dtype, device=f.device)


class RunningMean(nn.Module):
    """A bias-corrected exponential moving average (as in Adam) of a scalar."""

    avg: torch.Tensor  # buffers (register_buffer)
    steps: torch.Tensor

    def __init__(self, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"objective.baseline_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("avg", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def get(self) -> torch.Tensor:
        """The current average (0 before the first update)."""
        if self.steps.item() == 0:
            return self.avg.clone()
        return self.avg / (1 - self.decay ** self.steps.item())

    @torch.no_grad()
    def update(self, value: torch.Tensor) -> None:
        self.avg.mul_(self.decay).add_((1 - self.decay) * value.double())
        self.steps.add_(1)


class MovingAverage(Baseline):
    """b = an exponential moving average of the batch-mean learning signal over past steps.

    The average is taken before this step's samples are seen, so b is independent of them.
    """

    name = "moving-average"

    def __init__(self, decay: float = 0.9):
        super().__init__()
        self.mean = RunningMean(decay)

    def value(self, x: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        return self.mean.get().to(f.dtype)

    def loss(self, x: torch.Tensor | None, f: torch.Tensor, signal: torch.Tensor | None = None
             ) -> torch.Tensor:
        if self.training:
            self.mean.update(f.mean())
        return super().loss(x, f)


class NVIL(Baseline):
    """Neural variational inference and learning (Mnih & Gregor 2014): b(x) = c + C(x).

    c is a moving average of the signal; C is a small MLP on x trained by least squares to
    predict the rest (f - c), so b(x) tracks how well each datapoint is modelled. With
    ``normalize`` the centred signal is divided by max(1, its running standard deviation):
    this rescales (not biases) the encoder's gradient, as an adaptive step size.
    """

    name = "nvil"

    def __init__(self, event_shape: tuple[int, ...], hidden: int = 100, decay: float = 0.9,
                 normalize: bool = False):
        super().__init__()
        if hidden < 1:
            raise ConfigError(f"objective.baseline_hidden must be at least 1, got {hidden}")
        out = nn.Linear(hidden, 1)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(event_shape), hidden),
                                 nn.Tanh(), out)
        nn.init.zeros_(out.weight)  # start at b = c
        nn.init.zeros_(out.bias)
        self.mean = RunningMean(decay)
        self.normalize = normalize
        self.var = RunningMean(decay)

    def _predict(self, x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """C(x), (B,)."""
        if x is None:
            raise ValueError("the nvil baseline reads the batch x: pass x to the estimator")
        return self.net(x.to(next(self.net.parameters()).dtype)).squeeze(-1).to(dtype)

    def value(self, x: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        c = self.mean.get().to(f.dtype)
        return c + self._predict(x, f.dtype)  # (B,)

    def scale(self) -> torch.Tensor | float:
        if not self.normalize or self.var.steps.item() == 0:
            return 1.0
        return self.var.get().sqrt().clamp(min=1.0).item()

    def loss(self, x: torch.Tensor | None, f: torch.Tensor, signal: torch.Tensor | None = None
             ) -> torch.Tensor:
        c = self.mean.get().to(f.dtype)
        pred = self._predict(x, f.dtype)  # (B,)
        mse = (f.detach() - c - pred).pow(2).mean()
        if self.training:
            if signal is not None:
                self.var.update(signal.detach().pow(2).mean())
            self.mean.update(f.mean())
        return mse


class LeaveOneOut(Baseline):
    """b_k = the mean of the other K - 1 samples' signal (RLOO; Kool et al. 2019, as in VIMCO).

    b_k uses only samples independent of z_k, so it is unbiased; it needs K >= 2.
    """

    name = "leave-one-out"

    def __init__(self, samples: int):
        super().__init__()
        if samples < 2:
            raise ConfigError("objective.baseline=leave-one-out needs objective.samples >= 2 "
                              f"(K - 1 other samples per draw), got {samples}; "
                              "set objective.samples=2 or more")

    def value(self, x: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        k = f.shape[0]
        return (f.sum(0, keepdim=True) - f) / (k - 1)


BASELINES = ("none", "moving-average", "nvil", "leave-one-out")


def build_baseline(name: str, *, samples: int, event_shape: tuple[int, ...] | None,
                   decay: float = 0.9, hidden: int = 100, normalize: bool = False) -> Baseline:
    """A baseline from its config name (``objective.baseline``)."""
    if name == "none":
        return Baseline()
    if name == "moving-average":
        return MovingAverage(decay)
    if name == "nvil":
        if event_shape is None:
            raise ConfigError("objective.baseline=nvil needs the data's shape: pass "
                              "event_shape to build_objective")
        return NVIL(event_shape, hidden=hidden, decay=decay, normalize=normalize)
    if name == "leave-one-out":
        return LeaveOneOut(samples)
    raise ConfigError(f"objective.baseline='{name}' is not known; choose one of "
                      f"{', '.join(BASELINES)}")
