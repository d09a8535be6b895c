"""The discretized logistic: a distribution over the 256 levels {0, 1/255, ..., 1} of 8-bit data.

P(x) = sigmoid((x + h - mu) / s) - sigmoid((x - h - mu) / s) with h = 1/510 (half a bin), the
edge bins taking the logistic's tails: P(0) = sigmoid((h - mu) / s) and
P(1) = 1 - sigmoid((1 - h - mu) / s). So the 256 probabilities sum to exactly one, and
-log P is a code length: bits/dim = nll / (D ln 2). PixelCNN++ (Salimans et al. 2017) uses
the same likelihood on data scaled to [-1, 1]; here the data stay in [0, 1].
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all

MIN_LOG_SCALE = -7.0  # as PixelCNN++: scales below e^-7 ~ 1e-3 (a quarter bin) add nothing


class _Levels(constraints.Constraint):
    """Values k / (levels - 1), k = 0..levels-1."""

    is_discrete = True
    event_dim = 0

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def check(self, value: torch.Tensor) -> torch.Tensor:
        k = value * (self.levels - 1)
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-3)


def log_sigmoid_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)) for a > b, stable in both tails.

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), so no difference of
    nearly equal numbers is ever taken.
    """
    return F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a))


class DiscretizedLogistic(Distribution):
    """Logistic(loc, scale) rounded to ``levels`` equally spaced values in [0, 1].

    Args:
        loc: (*batch) the logistic's location, in data units ([0, 1] for the data's range).
        log_scale: (*batch) log of its scale; floored at ``MIN_LOG_SCALE``.
        levels: number of levels (256 for 8-bit data).
    """

    arg_constraints: ClassVar = {"loc": constraints.real, "log_scale": constraints.real}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int = 256,
                 validate_args: bool | None = None):
        self.loc, self.log_scale = broadcast_all(loc, log_scale)
        self.levels = levels
        self.log_scale = self.log_scale.clamp(min=MIN_LOG_SCALE)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return _Levels(self.levels)

    @property
    def half_bin(self) -> float:
        return 0.5 / (self.levels - 1)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def expand(self, batch_shape: torch.Size | list[int] | tuple[int, ...],
               _instance: object = None) -> DiscretizedLogistic:
        shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.log_scale.expand(shape),
                                   self.levels, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        inv_s = torch.exp(-self.log_scale)
        upper = (value + self.half_bin - self.loc) * inv_s
        lower = (value - self.half_bin - self.loc) * inv_s
        inner = log_sigmoid_difference(upper, lower)
        first = F.logsigmoid(upper)  # x = 0: all mass below the first bin's upper edge
        last = F.logsigmoid(-lower)  # x = 1: all mass above the last bin's lower edge
        return torch.where(value < self.half_bin, first,
                           torch.where(value > 1 - self.half_bin, last, inner))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """P(X <= value) for a level ``value``."""
        upper = (value + self.half_bin - self.loc) * torch.exp(-self.log_scale)
        return torch.where(value > 1 - self.half_bin, torch.ones_like(upper),
                           torch.sigmoid(upper))

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        x = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
        return (x * (self.levels - 1)).round().clamp(0, self.levels - 1) / (self.levels - 1)

    @property
    def mean(self) -> torch.Tensor:
        """E[X] = sum_{k>=1} P(X >= k/(L-1)) / (L-1), by enumerating the L-1 inner edges."""
        edges = torch.arange(1, self.levels, dtype=self.loc.dtype, device=self.loc.device)
        edges = (edges - 0.5) / (self.levels - 1)  # lower edge of level k
        z = (edges - self.loc.unsqueeze(-1)) * torch.exp(-self.log_scale).unsqueeze(-1)
        return torch.sigmoid(-z).sum(-1) / (self.levels - 1)

    @property
    def mode(self) -> torch.Tensor:
        return (self.loc.clamp(0, 1) * (self.levels - 1)).round() / (self.levels - 1)

    @property
    def variance(self) -> torch.Tensor:
        levels = torch.linspace(0, 1, self.levels, dtype=self.loc.dtype,
                                device=self.loc.device)
        probs = self.log_prob(levels.view(-1, *([1] * self.loc.dim()))).exp()  # (L, *batch)
        mean = (probs * levels.view(-1, *([1] * self.loc.dim()))).sum(0)
        second = (probs * levels.view(-1, *([1] * self.loc.dim())).pow(2)).sum(0)
        return second - mean.pow(2)
