"""Posterior families: encoder features -> q(z|x) as a ``torch.distributions`` object.

A family knows how many encoder outputs it needs (``param_size``), the shape of one latent
sample (``latent_shape``) and how to flatten a sample for the decoder (``flat_dim``).
Discrete families return the *discrete* distribution; a relaxation for training is the
estimator's business (see ``inference/estimators.py``), so evaluation always uses the true model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
)

from vaelab.models.discrete import Binary, OneHot

MIN_SCALE = 1e-5


def positive(raw: torch.Tensor) -> torch.Tensor:
    """softplus keeps scales positive without exp's overflow; the floor avoids log(0)."""
    return F.softplus(raw) + MIN_SCALE


def inverse_positive(value: float) -> float:
    """The raw parameter r with positive(r) = value (value > MIN_SCALE)."""
    return math.log(math.expm1(value - MIN_SCALE))


class LatentFamily(nn.Module):
    """Base class: ``forward(params)`` returns q(z|x) with event shape ``latent_shape``."""

    latent_shape: tuple[int, ...]
    param_size: int
    discrete: bool = False

    @property
    def flat_dim(self) -> int:
        return math.prod(self.latent_shape)

    def flatten(self, z: torch.Tensor) -> torch.Tensor:
        """(*batch, *latent_shape) -> (*batch, flat_dim), the decoder's input."""
        if len(self.latent_shape) == 1:
            return z
        return z.reshape(*z.shape[: z.dim() - len(self.latent_shape)], self.flat_dim)

    @property
    def param_note(self) -> str:
        """What the encoder's ``param_size`` outputs are, for error messages and docs."""
        return f"{self.param_size} parameters"

    def prior_params(self) -> torch.Tensor:
        """(param_size,) raw parameters of the family's standard member — where black-box VI
        starts without an encoder (inference/refine.py). Zero logits (uniform) unless overridden."""
        return torch.zeros(self.param_size)


class DiagonalGaussian(LatentFamily):
    """q(z|x) = N(mu, diag(sigma^2)); the encoder outputs mu and a pre-softplus sigma."""

    def __init__(self, dim: int):
        super().__init__()
        self.latent_shape = (dim,)
        self.param_size = 2 * dim

    @property
    def param_note(self) -> str:
        d = self.latent_shape[0]
        return f"{d} means and {d} scales (before softplus)"

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, raw = params.chunk(2, dim=-1)
        return Independent(Normal(loc, positive(raw), validate_args=False), 1,
                           validate_args=False)

    def prior_params(self) -> torch.Tensor:
        """mu = 0, sigma = 1: N(0, I)."""
        d = self.latent_shape[0]
        return torch.cat([torch.zeros(d), torch.full((d,), inverse_positive(1.0))])


class CholeskyGaussian(MultivariateNormal):
    """``MultivariateNormal`` whose draws mu + L eps are one einsum: torch's ``_batch_mv``
    broadcasts L (B, d, d) against eps (K, B, d) into K x B matrix-vector products, 40 ms
    per evaluation chunk of K=250 x B=20 in 50-D on 2 cores, 8 ms as B products of (K, d) by
    (d, d). The same eps and the same draws to float32 rounding (tests/models/test_latents.py)."""

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()
                ) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        return self.loc + torch.einsum("...ij,...j->...i", self._unbroadcasted_scale_tril, eps)


class FullCovarianceGaussian(LatentFamily):
    """q(z|x) = N(mu, L L^T) with L lower-triangular and a positive diagonal (Cholesky)."""

    rows: torch.Tensor  # buffers (register_buffer): L's lower-triangle indices, diagonal mask
    cols: torch.Tensor
    diag: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.latent_shape = (dim,)
        self.param_size = dim + dim * (dim + 1) // 2
        rows, cols = torch.tril_indices(dim, dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("diag", rows == cols, persistent=False)

    @property
    def param_note(self) -> str:
        d = self.latent_shape[0]
        return (f"{d} means and the {d * (d + 1) // 2} entries of the lower-triangular "
                "Cholesky factor, row by row (diagonal before softplus)")

    def forward(self, params: torch.Tensor) -> Distribution:
        d = self.latent_shape[0]
        loc, tril = params[..., :d], params[..., d:]
        tril = torch.where(self.diag, positive(tril), tril)
        scale_tril = params.new_zeros(*params.shape[:-1], d, d)
        scale_tril[..., self.rows, self.cols] = tril
        return CholeskyGaussian(loc, scale_tril=scale_tril, validate_args=False)

    def prior_params(self) -> torch.Tensor:
        """mu = 0, L = I: N(0, I)."""
        d = self.latent_shape[0]
        tril = torch.where(self.diag.cpu(), inverse_positive(1.0), 0.0)
        return torch.cat([torch.zeros(d), tril])


class CategoricalLatent(LatentFamily):
    """q(z|x) = prod_n OneHotCategorical(z_n; softmax(logits_n)): N variables, C classes each.

    A sample is (N, C) one-hot; the decoder sees it flattened to N*C.
    """

    discrete = True

    def __init__(self, dim: int, num_classes: int = 10):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be at least 2, got {num_classes}")
        self.latent_shape = (dim, num_classes)
        self.param_size = dim * num_classes

    @property
    def param_note(self) -> str:
        n, c = self.latent_shape
        return f"{n} x {c} logits, variable by variable"

    def forward(self, params: torch.Tensor) -> Distribution:
        logits = params.unflatten(-1, self.latent_shape)  # (B, N, C)
        return Independent(OneHot(logits=logits, validate_args=False), 1, validate_args=False)


class BernoulliLatent(LatentFamily):
    """q(z|x) = prod_n Bernoulli(z_n; sigmoid(logit_n)): N binary variables."""

    discrete = True

    def __init__(self, dim: int):
        super().__init__()
        self.latent_shape = (dim,)
        self.param_size = dim

    @property
    def param_note(self) -> str:
        return f"{self.latent_shape[0]} logits"

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Binary(logits=params, validate_args=False), 1,
                           validate_args=False)


FAMILIES: dict[str, type[LatentFamily]] = {
    "gaussian": DiagonalGaussian,
    "gaussian-full": FullCovarianceGaussian,
    "categorical": CategoricalLatent,
    "bernoulli": BernoulliLatent,
}
