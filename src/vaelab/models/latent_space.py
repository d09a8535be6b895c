"""Latent-space geometry shared by the plots and the explorer: encodings, 2-D projections,
prior grids, interpolation paths, and the 1-D marginals behind the KL split per dimension
(``diagnostics.kl_per_dimension``).

Codes are *flat*: ``posterior.flatten`` of the posterior mean, so a (N, C) categorical latent
is a vector of N*C probabilities and every family is handled by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from vaelab.models.vae import VAE


def is_discrete_model(model: VAE) -> bool:
    return bool(getattr(model.posterior, "discrete", False))


def is_categorical_model(model: VAE) -> bool:
    return is_discrete_model(model) and len(model.latent_shape) == 2


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters live (the run's ``train.device``)."""
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def encode_means(model: VAE, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Flat posterior means E_q[z|x], (N, flat_dim): Gaussian means or class probabilities.
    Computed on the model's device, returned on the CPU (for plots and JSON)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = [model.posterior.flatten(model.encode(x[i: i + batch_size].to(device)).mean).cpu()
           for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else x.new_zeros(0, model.posterior.flat_dim).cpu()


@torch.no_grad()
def decode_flat(model: VAE, codes: torch.Tensor) -> torch.Tensor:
    """E[x|z] for flat codes (B, flat_dim): (B, *event_shape), computed on the model's
    device and returned on the CPU."""
    z = codes.reshape(codes.shape[0], *model.latent_shape).to(model_device(model))
    return model.decode(z).mean.cpu()


@dataclass
class Projection:
    """An affine map from flat codes to the plane: uv = (z - center) @ basis.T.

    ``basis`` (2, D) has orthonormal rows (coordinate axes or principal directions), so
    ``lift`` moves a code within the plane through it without touching the other directions.
    """

    center: torch.Tensor  # (D,)
    basis: torch.Tensor  # (2, D)
    axis_labels: tuple[str, str]
    kind: str  # "direct", "dims" or "pca"

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.center) @ self.basis.T

    def lift(self, uv: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Codes whose projection is ``uv`` (B, 2): anchor + (uv - proj(anchor)) @ basis."""
        anchor = self.center if anchor is None else anchor
        return anchor + (uv - self(anchor)) @ self.basis


def fit_projection(codes: torch.Tensor, dims: tuple[int, int] | None = None) -> Projection:
    """2-D codes as they are; two chosen dimensions; otherwise the top two principal
    directions of the codes (PCA of the posterior means)."""
    n, d = codes.shape
    zeros = codes.new_zeros(d)
    if dims is not None:
        i, j = dims
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise ValueError(f"--dims {i},{j} must be two different latent dimensions in "
                             f"0..{d - 1}")
        basis = codes.new_zeros(2, d)
        basis[0, i] = basis[1, j] = 1.0
        return Projection(zeros, basis, (f"z[{i}]", f"z[{j}]"), "dims")
    if d <= 2:
        basis = torch.eye(2, d, dtype=codes.dtype)
        return Projection(zeros, basis, ("z[0]", "z[1]" if d == 2 else "(none)"), "direct")
    if n < 2:
        raise ValueError("a PCA projection needs at least two encoded points")
    center = codes.mean(0)
    _, s, vh = torch.linalg.svd(codes.double() - center.double(), full_matrices=False)
    basis = vh[:2].to(codes.dtype)
    # a deterministic sign: the largest-magnitude entry of each direction is positive
    signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    explained = (s**2 / (s**2).sum().clamp_min(1e-30)).tolist()
    labels = tuple(f"PC{k + 1} ({100 * explained[k]:.0f}% of variance)" for k in range(2))
    return Projection(center, basis, labels, "pca")  # type: ignore[arg-type]


def grid_values(n: int, kind: str = "linear", limit: float = 3.0) -> torch.Tensor:
    """n values per axis: equally spaced over [-limit, limit], or standard-normal quantiles
    Phi^-1((i + 1/2) / n), which place equal prior mass between neighbours."""
    if n < 2:
        raise ValueError(f"a grid needs at least 2 values per axis, got --n {n}")
    if kind == "linear":
        return torch.linspace(-limit, limit, n)
    if kind == "quantile":
        return Normal(0.0, 1.0).icdf((torch.arange(n, dtype=torch.float64) + 0.5) / n).float()
    raise ValueError(f"--grid-kind must be linear or quantile, got '{kind}'")


def grid_codes(dim: int, values: torch.Tensor, dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """(n*n, dim) codes on a plane of two latent dimensions, the others at 0.

    Row-major from the top-left: rows go down the second axis (largest first), columns go
    right along the first, so the picture reads like a plot with the usual axes.
    """
    n = values.numel()
    i, j = dims
    codes = torch.zeros(n * n, dim)
    for r, v in enumerate(values.flip(0)):
        for c, u in enumerate(values):
            codes[r * n + c, i] = u
            codes[r * n + c, j] = v
    return codes


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models), (T, D).

    Follows the great circle between a and b with the norm interpolated linearly, so a path
    between two typical Gaussian codes does not cut through the low-norm middle of the
    prior. Falls back to linear interpolation when a and b are (anti)parallel or zero.
    """
    t = t.reshape(-1, 1)
    na, nb = a.norm(), b.norm()
    if na < 1e-8 or nb < 1e-8:
        return (1 - t) * a + t * b
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua @ ub).clamp(-1.0, 1.0))
    if omega.abs() < 1e-4 or (math.pi - omega).abs() < 1e-4:
        return (1 - t) * a + t * b
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """``steps`` codes from a to b inclusive, (steps, D); mode linear or slerp."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0.0, 1.0, steps)
    if mode == "linear":
        return (1 - t[:, None]) * a + t[:, None] * b
    if mode == "slerp":
        return slerp(a, b, t)
    raise ValueError(f"interpolation mode must be linear or slerp, got '{mode}'")


# -- KL per latent dimension ----------------------------------------------------------------

def marginals(dist: Distribution) -> Distribution:
    """The 1-D marginals of each latent dimension as one distribution with batch (..., D).

    Independent(base) -> base; MultivariateNormal -> Normal(mean, sqrt(diag Sigma));
    a mixture of such -> a 1-D mixture per dimension (weights shared across dimensions).
    """
    if isinstance(dist, Independent) and len(dist.event_shape) == 1:
        return dist.base_dist
    if isinstance(dist, MultivariateNormal):
        return Normal(dist.loc, dist.variance.sqrt(), validate_args=False)
    if isinstance(dist, MixtureSameFamily):
        comp = marginals(dist.component_distribution)  # batch (..., K, D)
        if not isinstance(comp, Normal):
            raise ValueError(f"no per-dimension marginals for a mixture of "
                             f"{type(dist.component_distribution).__name__}")
        comp_moved = Normal(comp.loc.movedim(-2, -1), comp.scale.movedim(-2, -1),
                            validate_args=False)  # (..., D, K)
        logits = dist.mixture_distribution.logits  # (..., K)
        d = comp_moved.loc.shape[-2]
        logits = logits.unsqueeze(-2).expand(*logits.shape[:-1], d, logits.shape[-1])
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), comp_moved,
                                 validate_args=False)
    raise ValueError(f"no per-dimension marginals for {type(dist).__name__}")
