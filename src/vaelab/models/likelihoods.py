"""Likelihoods p(x|z): decoder output ``(*batch, k, *event_shape)`` -> Distribution over x.

``params_per_element`` (k) tells the decoder how many maps to produce per data element.
``data_range`` is what the likelihood's support admits, checked against the data before
training (a Bernoulli on pixel values in [0, 255] is a silent bug otherwise).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)

from vaelab.config import LikelihoodName
from vaelab.models.discretized import DiscretizedLogistic
from vaelab.models.latents import MIN_SCALE, inverse_positive, positive


class Likelihood(nn.Module):
    params_per_element: int = 1
    data_range: tuple[float, float] | None = None  # None = any real value
    discrete: bool = False  # a probability mass over data values (then bits/dim are reported)
    requires_8bit: bool = False  # defined only on the 256 levels k/255 of 8-bit data
    name: str = ""

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_shape = tuple(event_shape)

    @property
    def param_note(self) -> str:
        """What the decoder's k maps per element are, for error messages and docs."""
        return "logits, one per data element"

    def _independent(self, base: Distribution) -> Distribution:
        return Independent(base, len(self.event_shape), validate_args=False)


class LogitBernoulli(Bernoulli):
    """``Bernoulli(logits=...)`` whose log_prob is x*l - softplus(l).

    Mathematically identical to torch's (tested), and about twice as fast on the CPU: torch
    computes it through a multi-pass binary cross-entropy, which dominates importance-sampled
    evaluation (K=5000 decodes of every test image).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits
        return value * logits - F.softplus(logits)


class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)); binary data, or [0,1] intensities."""

    data_range = (0.0, 1.0)
    discrete = True
    name = "bernoulli"

    def forward(self, out: torch.Tensor) -> Distribution:
        return self._independent(LogitBernoulli(logits=out.squeeze(-len(self.event_shape) - 1),
                                                validate_args=False))


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(x; mu(z), sigma^2) with sigma fixed, learned (shared or per element), or
    predicted by the decoder (``variance="output"``, then k=2).

    A fixed sigma is exactly ``std`` (a buffer, not through the softplus and its floor);
    learned ones start at ``std`` (``latents.inverse_positive``, so the floor is allowed for).
    """

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], variance: str = "fixed",
                 std: float = 0.1):
        super().__init__(event_shape)
        if variance not in ("fixed", "shared", "pixel", "output"):
            raise ValueError(f"model.likelihood_variance must be fixed, shared, pixel or output,"
                             f" got '{variance}'")
        if std <= 0:
            raise ValueError(f"model.likelihood_std must be positive, got {std}")
        self.variance = variance
        self.params_per_element = 2 if variance == "output" else 1
        if variance == "fixed":  # from the config, not trained: not in the state dict
            self.register_buffer("std", torch.tensor(float(std)), persistent=False)
            return
        if std <= MIN_SCALE:
            raise ValueError(f"model.likelihood_std={std:g} must exceed the scale floor "
                             f"{MIN_SCALE:g} when the variance is learned")
        raw = inverse_positive(std)  # positive(raw) == std (to rounding)
        if variance == "shared":
            self.raw_std = nn.Parameter(torch.tensor(raw))
        elif variance == "pixel":
            self.raw_std = nn.Parameter(torch.full(self.event_shape, raw))

    @property
    def param_note(self) -> str:
        if self.variance == "output":
            return "k=0 the means, k=1 the scales (before softplus), one each per element"
        return f"the means, one per element (std: {self.variance})"

    def forward(self, out: torch.Tensor) -> Distribution:
        dim = -len(self.event_shape) - 1
        if self.variance == "output":
            loc, raw = out.unbind(dim)
            scale = positive(raw)
        elif self.variance == "fixed":
            loc = out.squeeze(dim)
            std = self.std
            assert isinstance(std, torch.Tensor)
            scale = std.to(loc.dtype)
        else:
            loc = out.squeeze(dim)
            scale = positive(self.raw_std)
        return self._independent(Normal(loc, scale.expand_as(loc), validate_args=False))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints before the exact fixed std stored it as raw_std: it is the config's
        if self.variance == "fixed":
            state_dict.pop(prefix + "raw_std", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ContinuousBernoulliLikelihood(Likelihood):
    """p(x|z) = prod_i CB(x_i; sigmoid(logit_i)): the Bernoulli made a normalised density on
    [0, 1] (Loaiza-Ganem & Cunningham 2019), for intensities that are not binarized."""

    data_range = (0.0, 1.0)
    name = "continuous-bernoulli"

    def forward(self, out: torch.Tensor) -> Distribution:
        logits = out.squeeze(-len(self.event_shape) - 1)
        return self._independent(ContinuousBernoulli(logits=logits, validate_args=False))


class DiscretizedLogisticLikelihood(Likelihood):
    """p(x|z) = prod_i DiscretizedLogistic(x_i; mu_i, log s_i) over the 256 levels of 8-bit
    data; the decoder predicts a mean and a log-scale per element (k=2)."""

    params_per_element = 2
    data_range = (0.0, 1.0)
    discrete = True
    requires_8bit = True
    name = "logistic-256"

    @property
    def param_note(self) -> str:
        return "k=0 the means, k=1 the log-scales, one each per element"

    def forward(self, out: torch.Tensor) -> Distribution:
        loc, log_scale = out.unbind(-len(self.event_shape) - 1)
        return self._independent(DiscretizedLogistic(loc, log_scale, levels=256,
                                                     validate_args=False))


def build_likelihood(name: str, event_shape: tuple[int, ...], *, variance: str = "fixed",
                     std: float = 0.1) -> Likelihood:
    """The one place a likelihood name becomes an object."""
    if name == "bernoulli":
        return BernoulliLikelihood(event_shape)
    if name == "gaussian":
        return GaussianLikelihood(event_shape, variance=variance, std=std)
    if name == "continuous-bernoulli":
        return ContinuousBernoulliLikelihood(event_shape)
    if name == "logistic-256":
        return DiscretizedLogisticLikelihood(event_shape)
    raise ValueError(f"unknown model.likelihood '{name}'; choose one of {', '.join(LIKELIHOODS)}")


LIKELIHOODS = list(typing.get_args(LikelihoodName))  # the names config.py declares
