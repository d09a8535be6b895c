"""Hierarchical VAEs: L Gaussian latent layers, bottom-up or top-down inference. No loss here.

Generative path, layers numbered from the data up (z_1 next to x, z_L on top):

    p(x, z_1..L) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) p(x | z_1)

with p(z_L) = N(0, I) and each p(z_l | z_{l+1}) a diagonal Gaussian whose mean and scale an
MLP reads from z_{l+1}. Two inference schemes:

* ``bottom-up`` (Burda et al. 2016, the IWAE paper's two-layer model):
  q(z_1|x) prod_{l>1} q(z_l | z_{l-1}), each a diagonal Gaussian from an MLP.
* ``top-down`` (Sonderby et al. 2016, LVAE; Vahdat & Kautz 2020, NVAE): a deterministic
  bottom-up pass h_1 = enc(x), h_{l+1} = up_l(h_l), each h_l read as the parameters
  (mu_hat_l, sigma_hat_l) of a Gaussian; then, along the generative path,
  q(z_L|x) = N(mu_hat_L, sigma_hat_L^2) and q(z_l | z_{l+1}, x) from h_l and
  p(z_l | z_{l+1}) = N(mu_p, sigma_p^2):

  - ``ladder`` (LVAE eq. 18-19, precision-weighted): sigma^-2 = sigma_hat^-2 + sigma_p^-2,
    mu = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma^2;
  - ``residual`` (NVAE eq. 2, residual normal): N(mu_p + mu_hat, (sigma_p sigma_hat)^2).

  Here q and p of a layer condition on the same sample above, so their KL is analytic
  given it (``LatentLayer.analytic``).

:meth:`HierarchicalVAE.trace` draws the joint latent and returns every layer's q and p as
``torch.distributions`` objects; the objectives (``inference/layered.py``) and evaluation
sum their log-densities. ``encode``/``decode``/``prior`` act on the *top* layer (the
explorer, reconstructions and latent plots); they are pictures, never likelihoods.

Conditional (``classes`` = C > 0; Sohn et al. 2015): q(z|x, y) and p(x|z_1, y) read a one-hot
label y, the prior stays N(0, I), so log w estimates log p(x|y). A labelled batch is one
tensor, (B, D + C): the flattened x, then one-hot y (``data/prepare.py`` packs it, so batching,
sharding and dynamic binarization, which keeps 0/1 values, carry labels unchanged). The
encoder reads that tensor whole; the decoder reads [z_1, y]. Calls without labels (pictures,
audits on unlabelled x) use the label average y = 1/C.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelab.models.latents import DiagonalGaussian, positive
from vaelab.models.likelihoods import Likelihood
from vaelab.models.networks import mlp
from vaelab.models.priors import StandardNormal

INFERENCE = ("bottom-up", "top-down")
TOP_DOWN = ("ladder", "residual")

Sampler = Callable[[Distribution, tuple[int, ...]], torch.Tensor]


def rsample(q: Distribution, shape: tuple[int, ...]) -> torch.Tensor:
    return q.rsample(torch.Size(shape))


@dataclass
class LatentLayer:
    """One layer of a drawn joint latent."""

    z: torch.Tensor  # (K, B, d_l)
    q: Distribution  # q(z_l | ...): batch (B,) or (K, B)
    p: Distribution  # p(z_l | z_{l+1}): batch () on top, else (K, B)
    analytic: bool  # KL(q || p) in closed form is the expectation over z_l given the rest


@dataclass
class Trace:
    """The joint latent of K draws for B datapoints, bottom layer first, and p(x|z_1)."""

    layers: list[LatentLayer]
    px: Distribution  # p(x | z_1), batch (K, B)
    x: torch.Tensor  # (B, *event): the data px scores (a labelled batch without its labels)


def _gaussian(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def _normal(prior: Distribution) -> Normal:
    """The Normal inside a diagonal Gaussian ``Independent(Normal, 1)``."""
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if not isinstance(base, Normal):
        raise TypeError(f"expected a diagonal Gaussian prior, got {type(base).__name__}")
    return base


def precision_weighted(mu_hat: torch.Tensor, sigma_hat: torch.Tensor, prior: Distribution
                       ) -> Distribution:
    """LVAE's q: the product of N(mu_hat, sigma_hat^2) and the prior N(mu_p, sigma_p^2),
    renormalised (a product of Gaussians). Shapes broadcast, e.g. (B, d) with (K, B, d)."""
    base = _normal(prior)
    prec_hat, prec_p = sigma_hat.pow(-2), base.scale.pow(-2)
    var = 1.0 / (prec_hat + prec_p)
    return _gaussian((mu_hat * prec_hat + base.loc * prec_p) * var, var.sqrt())


def residual_normal(mu_hat: torch.Tensor, sigma_hat: torch.Tensor, prior: Distribution
                    ) -> Distribution:
    """NVAE's q: location and scale relative to the prior's, N(mu_p + mu_hat, (s_p s_hat)^2)."""
    base = _normal(prior)
    return _gaussian(base.loc + mu_hat, base.scale * sigma_hat)


COMBINE = {"ladder": precision_weighted, "residual": residual_normal}


class GaussianConditional(nn.Module):
    """h (*, in_features) -> N(mu(h), diag sigma(h)^2) over d dimensions, batch shape *."""

    def __init__(self, in_features: int, hidden: list[int], dim: int, act: str):
        super().__init__()
        self.family = DiagonalGaussian(dim)
        self.net = mlp(in_features, hidden, self.family.param_size, act)

    def forward(self, h: torch.Tensor) -> Distribution:
        return self.family(self.net(h))


class HierarchicalVAE(nn.Module):
    """p(x, z) over L >= 1 Gaussian latent layers with amortized q (module docstring).

    Args:
        encoder: x (B, *event) -> (B, 2 d_1), the parameters of q(z_1|x) (bottom-up) or h_1.
        decoder: z_1 (*, d_1) -> the likelihood's parameter maps.
        likelihood: p(x|z_1) from the decoder's output.
        sizes: [d_1, ..., d_L], bottom layer first.
        inference: "bottom-up" or "top-down"; combine: "ladder" or "residual" (top-down).
        hidden: MLP hidden sizes of the networks between layers; act: their activation.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
                 sizes: list[int], *, inference: str = "bottom-up", combine: str = "ladder",
                 hidden: list[int] | None = None, act: str = "relu", classes: int = 0):
        super().__init__()
        self.classes = classes  # > 0: conditional on a one-hot label of this many values
        if inference not in INFERENCE or combine not in TOP_DOWN:
            raise ValueError(f"inference must be one of {INFERENCE} and combine one of "
                             f"{TOP_DOWN}, got {inference!r}, {combine!r}")
        hidden = list(hidden or [])
        self.sizes = list(sizes)
        self.inference = inference
        self.combine = combine
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.families = nn.ModuleList(DiagonalGaussian(d) for d in self.sizes)
        self.prior_module = StandardNormal(self.sizes[-1])
        # p(z_l | z_{l+1}) for l = 1..L-1 (index l-1)
        self.down = nn.ModuleList(GaussianConditional(self.sizes[i + 1], hidden, d, act)
                                  for i, d in enumerate(self.sizes[:-1]))
        # bottom-up: z_l -> params of q(z_{l+1}|z_l); top-down: h_l -> h_{l+1} (both 2 d)
        width = (lambda i: self.sizes[i]) if inference == "bottom-up" \
            else (lambda i: 2 * self.sizes[i])
        self.up = nn.ModuleList(mlp(width(i), hidden, 2 * self.sizes[i + 1], act)
                                for i in range(len(self.sizes) - 1))

    # --- the shape facts other modules read -------------------------------------------
    @property
    def posterior(self) -> DiagonalGaussian:
        """The top layer's family (what the explorer and latent plots show)."""
        return cast(DiagonalGaussian, self.families[-1])  # families holds DiagonalGaussians

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.sizes[-1],)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    @property
    def depth(self) -> int:
        return len(self.sizes)

    # --- the joint latent ---------------------------------------------------------------
    def prior(self) -> Distribution:
        """p(z_L), batch shape ()."""
        return self.prior_module()

    def conditional_prior(self, layer: int, z_above: torch.Tensor) -> Distribution:
        """p(z_l | z_{l+1}) for layer index ``layer`` (0 = bottom) < L-1."""
        return self.down[layer](z_above)

    def trace(self, x: torch.Tensor, samples: int = 1, sampler: Sampler = rsample) -> Trace:
        """K draws of z_1..L ~ q(.|x) for x (B, *event), with each layer's q and p, and
        p(x|z_1). ``sampler(q, shape)`` draws (pathwise by default; ``rng.draw`` in
        training)."""
        data, y = self.split(x)
        layers = self.latents(x, samples, sampler)
        return Trace(layers, self._px(layers[0].z, y), data)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x (B, *event), one-hot y (B, C) or None) of a batch; labelled batches of a
        conditional model are (B, D + C), anything else has no labels."""
        if not self.classes:
            return x, None
        d = math.prod(self.event_shape)
        if tuple(x.shape[1:]) != (d + self.classes,):
            return x, None
        return x[:, :d].reshape(-1, *self.event_shape), x[:, d:]

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the conditional encoder reads: a labelled batch as it is; unlabelled x with
        the label average 1/C appended."""
        if not self.classes or self.split(x)[1] is not None:
            return x
        flat = x.reshape(x.shape[0], -1)
        return torch.cat([flat, flat.new_full((x.shape[0], self.classes), 1 / self.classes)], 1)

    def decoder_input(self, z1: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """What the decoder reads: z_1 (*batch, d_1), and in a conditional model the one-hot
        y (B, C) appended (broadcast over the draws), or 1/C per class without labels."""
        if not self.classes:
            return z1
        if y is None:
            y = z1.new_full((self.classes,), 1 / self.classes)
        return torch.cat([z1, y.expand(*z1.shape[:-1], self.classes)], -1)

    def _px(self, z1: torch.Tensor, y: torch.Tensor | None) -> Distribution:
        """p(x | z_1) (or p(x | z_1, y)) for z_1 (*batch, d_1); y (B, C) broadcasts."""
        return self.likelihood(self.decoder(self.decoder_input(z1, y)))

    def latents(self, x: torch.Tensor, samples: int = 1, sampler: Sampler = rsample
                ) -> list[LatentLayer]:
        """The layers of :meth:`trace` without decoding (what active units need)."""
        if self.inference == "bottom-up":
            return self._bottom_up(x, samples, sampler)
        return self._top_down(x, samples, sampler)

    def _bottom_up(self, x: torch.Tensor, k: int, sampler: Sampler) -> list[LatentLayer]:
        q = self.families[0](self.encoder(self.encoder_input(x)))  # batch (B,)
        zs, qs = [sampler(q, (k,))], [q]  # z_1: (K, B, d_1)
        for i, up in enumerate(self.up):
            q = self.families[i + 1](up(zs[-1]))  # q(z_{l+1} | z_l), batch (K, B)
            qs.append(q)
            zs.append(sampler(q, ()))
        top = self.depth - 1
        return [LatentLayer(zs[i], qs[i],
                            self.prior() if i == top else self.conditional_prior(i, zs[i + 1]),
                            analytic=i == top)  # below the top, p reads a later draw
                for i in range(self.depth)]

    def _top_down(self, x: torch.Tensor, k: int, sampler: Sampler) -> list[LatentLayer]:
        hs = [self.encoder(self.encoder_input(x))]  # (B, 2 d_1)
        for up in self.up:
            hs.append(up(hs[-1]))  # (B, 2 d_{l+1})
        q = self.families[-1](hs[-1])
        layers = [LatentLayer(sampler(q, (k,)), q, self.prior(), analytic=True)]
        combine = COMBINE[self.combine]
        for i in range(self.depth - 2, -1, -1):
            p = self.conditional_prior(i, layers[0].z)  # batch (K, B)
            mu_hat, raw = hs[i].chunk(2, dim=-1)
            q = combine(mu_hat, positive(raw), p)
            layers.insert(0, LatentLayer(sampler(q, ()), q, p, analytic=True))
        return layers

    # --- pictures: the top layer --------------------------------------------------------
    def _down_means(self, z_top: torch.Tensor) -> torch.Tensor:
        """z_1 following the conditional means of p(z_l|z_{l+1}) down from z_L."""
        z = z_top
        for i in range(self.depth - 2, -1, -1):
            z = self.conditional_prior(i, z).mean
        return z

    def encode(self, x: torch.Tensor) -> Distribution:
        """The top layer's q for pictures: q(z_L|x) (top-down, exact), or bottom-up
        q(z_L | z_{L-1}) along the means of the layers below (an approximation)."""
        if self.inference == "top-down":
            h = self.encoder(self.encoder_input(x))
            for up in self.up:
                h = up(h)
            return self.families[-1](h)
        q = self.families[0](self.encoder(self.encoder_input(x)))
        for i, up in enumerate(self.up):
            q = self.families[i + 1](up(q.mean))
        return q

    def decode(self, z_top: torch.Tensor) -> Distribution:
        """p(x | z_1 = the conditional-mean path down from z_L): a picture of what the top
        layer encodes, not the marginal p(x|z_L)."""
        return self._px(self._down_means(z_top), None)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True, top: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """n ancestral draws of x; ``top`` (n, d_L) fixes z_L and resamples the layers below
        (what the lower layers add). Conditional: ``labels`` (n,) int, default 0, 1, ...,
        C-1 in turn. ``mean=True`` returns E[x|z_1]."""
        z = self.prior().sample((n,)) if top is None else top
        for i in range(self.depth - 2, -1, -1):
            z = self.conditional_prior(i, z).sample()
        y = None
        if self.classes:
            labels = torch.arange(n, device=z.device) % self.classes if labels is None \
                else labels
            y = torch.nn.functional.one_hot(labels.to(z.device), self.classes).to(z.dtype)
        px = self._px(z, y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1] with every layer at its q mean (top-down: going down from q(z_L|x))."""
        tr = self.trace(x, 1, sampler=lambda q, shape: q.mean.expand(*shape, *q.mean.shape))
        return tr.px.mean[0]

    @torch.no_grad()
    def relabel(self, x: torch.Tensor) -> torch.Tensor:
        """Conditional: each datapoint's code decoded under every label, (B, C, *event).

        ``x`` is a labelled batch (B, D + C); its code is every layer at its q mean given
        (x, y) (as :meth:`reconstruct`), and column c is E[x | z_1, y = c]: what the latent
        keeps (style) when the label (class) changes (Sohn et al. 2015, fig. 5)."""
        if not self.classes:
            raise ValueError("relabel needs a conditional model (model.conditional=true)")
        if self.split(x)[1] is None:
            raise ValueError(f"relabel needs labelled rows (B, D + {self.classes}), got "
                             f"{tuple(x.shape)}")
        z1 = self.latents(x, 1, sampler=lambda q, shape: q.mean.expand(*shape, *q.mean.shape)
                          )[0].z[0]  # (B, d_1)
        b, c = z1.shape[0], self.classes
        y = torch.eye(c, dtype=z1.dtype, device=z1.device).expand(b, c, c)  # (B, C, C)
        px = self._px(z1.unsqueeze(1).expand(b, c, z1.shape[-1]), y)
        return px.mean  # (B, C, *event)

    def describe(self) -> str:
        """One line for reports: the layers, the inference scheme, labels."""
        scheme = self.inference + (f" ({self.combine})" if self.inference == "top-down" else "")
        label = f", conditional on {self.classes} labels" if self.classes else ""
        return f"{self.depth} Gaussian layers {self.sizes} (bottom first), {scheme}{label}"
