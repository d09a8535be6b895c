"""Priors p(z): modules whose ``forward()`` returns a Distribution over one latent sample.

Trainable priors (a mixture of Gaussians, the VampPrior's pseudo-inputs) keep their parameters
here and are trained jointly with the rest of the model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
)

from vaelab.models.discrete import OneHot
from vaelab.models.kl import UnitNormal
from vaelab.models.latents import positive


class StandardNormal(nn.Module):
    """p(z) = N(0, I)."""

    loc: torch.Tensor  # buffers (register_buffer)
    scale: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim), persistent=False)
        self.register_buffer("scale", torch.ones(dim), persistent=False)

    def forward(self) -> Distribution:
        # UnitNormal: a Normal whose type selects the cheaper closed-form KL (models/kl.py)
        return Independent(UnitNormal(self.loc, self.scale, validate_args=False), 1,
                           validate_args=False)


class _Logits(nn.Module):
    """Prior logits: fixed zeros (the uniform prior) or a trainable parameter."""

    def __init__(self, shape: tuple[int, ...], learned: bool):
        super().__init__()
        if learned:
            self.logits = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("logits", torch.zeros(shape), persistent=False)


class CategoricalPrior(_Logits):
    """p(z) = prod_n OneHotCategorical(z_n; softmax(l_n)) over (N, C) one-hot codes; l = 0 is
    uniform (``learned=False``, the prior of Jang et al. 2017), else l is trained."""

    def __init__(self, dim: int, num_classes: int, learned: bool = False):
        super().__init__((dim, num_classes), learned)

    def forward(self) -> Distribution:
        return Independent(OneHot(logits=self.logits, validate_args=False), 1,
                           validate_args=False)


class BernoulliPrior(_Logits):
    """p(z) = prod_n Bernoulli(z_n; sigmoid(l_n)); l = 0 is uniform (p = 1/2), or trained."""

    def __init__(self, dim: int, learned: bool = False):
        super().__init__((dim,), learned)

    def forward(self) -> Distribution:
        return Independent(Bernoulli(logits=self.logits, validate_args=False), 1,
                           validate_args=False)


# exp of an argument below its underflow threshold (about -708 in float64) takes a slow path
# on the CPU, about 15x the time of other arguments (benchmarks/README.md); terms this far
# below a row's largest change its float64 sum by less than 1e-300 of it, so they are floored
EXP_FLOOR = -700.0
# rows of the (rows, C) float64 matrix formed per block: about 2 MB, in cache from the
# product to the sum, and allocated once (fresh large tensors cost page faults every chunk)
BLOCK_ELEMENTS = 1 << 18


def floored_logsumexp(args: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """torch.logsumexp over the last dim (float64), with terms more than 700 below the row's
    maximum floored at exp(-700) (a change below 1e-300 of the sum) so exp stays fast.
    Differentiable: a floored term's gradient is 0 instead of at most exp(-700).
    ``in_place``: overwrite ``args`` instead of allocating (no gradients)."""
    top = args.detach().amax(-1, keepdim=True)
    empty = (top == -math.inf).squeeze(-1)  # rows of -inf only: -inf, as torch.logsumexp gives
    top = top.masked_fill(~top.isfinite(), 0.0)
    terms = args.sub_(top).clamp_(min=EXP_FLOOR).exp_() if in_place \
        else (args - top).clamp(min=EXP_FLOOR).exp()
    return (terms.sum(-1).log() + top.squeeze(-1)).masked_fill(empty, -math.inf)


def blocked_logsumexp_addmm(const: torch.Tensor, features: torch.Tensor,
                            factors: torch.Tensor) -> torch.Tensor:
    """floored_logsumexp(const + features @ factors) without gradients, formed in blocks of
    rows in one reused buffer: const (C,), features (N, F), factors (F, C) -> (N,)."""
    n, c = features.shape[0], factors.shape[1]
    rows = max(1, min(n, BLOCK_ELEMENTS // max(c, 1)))
    buffer = features.new_empty(rows, c)
    out = features.new_empty(n)
    for start in range(0, n, rows):
        block = buffer[: min(rows, n - start)]
        torch.addmm(const, features[start: start + rows], factors, out=block)
        out[start: start + rows] = floored_logsumexp(block, in_place=True)
    return out


class ChunkedMixture(MixtureSameFamily):
    """A MixtureSameFamily with a log_prob fit for importance sampling against many components.

    The parent evaluates every component at every point elementwise, a (points, C, D) tensor:
    5 GB for 500 importance samples x 100 images against a 500-component VampPrior in 50-D,
    and slow. For diagonal Gaussian components the squared distances come instead from matrix
    products, sum_d (z_d - mu_cd)^2 / s_cd^2 = z^2 @ (1/s^2)^T - 2 z @ (mu/s^2)^T + c_c (one
    product of [z^2, z] with the stacked factors), in float64 so the expansion loses no
    digits, then a logsumexp whose far terms are floored (``floored_logsumexp``); without
    gradients (evaluation) in cache-sized blocks of rows. Other components go through the
    parent in chunks of at most ``max_elements`` numbers. Values and gradients are the
    parent's.
    """

    max_elements = 1 << 24

    def _diagonal_gaussian(self) -> Normal | None:
        comp = self.component_distribution
        if isinstance(comp, Independent) and isinstance(comp.base_dist, Normal) \
                and comp.reinterpreted_batch_ndims == 1 and self.batch_shape == ():
            return comp.base_dist
        return None

    def _log_prob_diagonal(self, flat: torch.Tensor, base: Normal) -> torch.Tensor:
        loc, scale = base.loc.double(), base.scale.double()  # (C, D)
        precision = scale.pow(-2)
        shift = loc * precision
        z = flat.double()  # (N, D)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_weights = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
        # log pi_c - log Z_c - quad / 2 as one product: [z^2, z] @ [-P / 2, P mu]^T + const_c,
        # so the (N, C) matrix is written once, not by six element-wise passes
        const = log_weights - log_norm - 0.5 * (loc * shift).sum(-1)  # (C,)
        features = torch.cat([z.pow(2), z], -1)  # (N, 2D)
        factors = torch.cat([-0.5 * precision, shift], -1).T  # (2D, C)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (features, factors, const)):
            return floored_logsumexp(torch.addmm(const, features, factors)).to(flat.dtype)
        return blocked_logsumexp_addmm(const, features, factors).to(flat.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        event = self.event_shape
        batch = x.shape[: x.dim() - len(event)]
        if self.batch_shape != ():
            return super().log_prob(x)
        base = self._diagonal_gaussian()
        components = self.mixture_distribution.logits.shape[-1]
        per_point = components * (1 if base is not None else max(1, event.numel()))
        rows = max(1, self.max_elements // per_point)
        flat = x.reshape(-1, *event)
        if base is not None:
            parts = [self._log_prob_diagonal(flat[i: i + rows], base)
                     for i in range(0, flat.shape[0], rows)]
        elif flat.shape[0] <= rows:
            return super().log_prob(x)
        else:
            parts = [super(ChunkedMixture, self).log_prob(flat[i: i + rows])
                     for i in range(0, flat.shape[0], rows)]
        return torch.cat(parts).reshape(batch)


class MixtureOfGaussians(nn.Module):
    """p(z) = sum_c pi_c N(mu_c, diag(sigma_c^2)), all trainable (weights, means, scales)."""

    def __init__(self, dim: int, components: int, init_spread: float = 1.0):
        super().__init__()
        if components < 1:
            raise ValueError(f"model.prior_components must be at least 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(init_spread * torch.randn(components, dim))
        # softplus(0.5413) = 1: components start with unit scale
        self.raw_scale = nn.Parameter(torch.full((components, dim), 0.5413))

    def forward(self) -> Distribution:
        comp = Independent(Normal(self.loc, positive(self.raw_scale), validate_args=False), 1,
                           validate_args=False)
        return ChunkedMixture(Categorical(logits=self.logits, validate_args=False), comp,
                              validate_args=False)


class VampPrior(nn.Module):
    """VampPrior (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k), K learned pseudo-inputs.

    The encoder and posterior family are the VAE's own, held outside the module tree (a plain
    tuple), so their parameters appear once in ``state_dict`` (under the VAE's encoder) and
    ``load_state_dict`` round-trips; the prior's only own parameter is ``pseudo_inputs``.
    Gradients of log p(z) flow into the encoder too, as in the paper.
    """

    def __init__(self, encoder: nn.Module, posterior: nn.Module, init: torch.Tensor):
        super().__init__()
        if init.dim() < 2 or init.shape[0] < 1:
            raise ValueError("model.prior_components must be at least 1 for the vamp prior, "
                             f"got {init.shape[0] if init.dim() else 0}")
        self.pseudo_inputs = nn.Parameter(init.clone())  # (K, *event_shape)
        self._shared = (encoder, posterior)  # not registered: no duplicate parameters

    @property
    def components(self) -> int:
        return self.pseudo_inputs.shape[0]

    def forward(self) -> Distribution:
        encoder, posterior = self._shared
        comp = posterior(encoder(self.pseudo_inputs))  # batch (K,)
        weights = Categorical(logits=self.pseudo_inputs.new_zeros(self.components),
                              validate_args=False)
        return ChunkedMixture(weights, comp, validate_args=False)
