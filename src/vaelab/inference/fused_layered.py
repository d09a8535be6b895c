"""The ELBO and IWAE bound of the MLP Gaussian hierarchy with fused networks and no
distribution objects.

Which model: a :class:`~vaelab.models.hierarchical.HierarchicalVAE` whose networks are all
vaelab MLPs (``Linear``, ReLU or tanh, ..., ``Linear``), with a Bernoulli p(x|z_1) on
logits: bottom-up or top-down (ladder or residual), any number of layers, conditional or
not. That is ``configs/hierarchical.toml`` and its variants.

Why: the general path (``layered.py``) builds some ten ``torch.distributions`` objects per
step, evaluates each Gaussian's log-density from scratch at its own draw, and runs every
linear layer and activation as a node of its own. Here each network is one autograd node
(``_FusedMLP``: oneDNN or torch GEMMs per ``train.matmul``, the activation fused, the
backward pass a straight list of kernels, as in ``fused_elbo.py``), the decoder and
log p(x|z_1) are one node, and the Gaussian algebra between them is plain tensor arithmetic
that autograd differentiates:

* z_l = mu + s * eps with the noise drawn in the general path's order and shapes;
* log q(z_l|.) at its own draw is -|eps|^2/2 - sum log s (the same function of mu and s at
  fixed eps as ``Normal(mu, s).log_prob(z)``: the same value and gradients);
* log p(z_l|z_{l+1}) = -|(z - mu_p)/s_p|^2/2 - sum log s_p, log p(z_L) = -|z_L|^2/2; the
  -d/2 log 2 pi of p and q cancel in log p - log q and are left out;
* the closed-form KLs are torch's formulas (``kl.UnitNormal`` on top,
  ``_kl_normal_normal`` below).

Same numbers as the general path to float32 rounding, the same random draws, and the same
gradients (``tests/inference/test_fused_layered.py``); ``train.fused=false`` switches it
off, and :func:`layered_plan` says where it applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from vaelab import rng
from vaelab.inference.fused_elbo import _mlp_backward, _mlp_forward, _mlp_layers
from vaelab.inference.fused_top_down import top_down_iwae
from vaelab.inference.layered import LayeredOutput
from vaelab.inference.objectives import apply_free_bits
from vaelab.models import fastlinear, torch_private
from vaelab.models.hierarchical import GaussianConditional, HierarchicalVAE
from vaelab.models.kl import NoClosedFormKL
from vaelab.models.latents import MIN_SCALE, DiagonalGaussian
from vaelab.models.likelihoods import BernoulliLikelihood
from vaelab.models.networks import MLPDecoder, MLPEncoder
from vaelab.models.priors import StandardNormal

Net = tuple[tuple[nn.Linear, ...], str]  # the Linear layers of one MLP and its activation


@dataclass(frozen=True)
class LayeredPlan:
    """The networks of a hierarchy the fused path applies to, bottom first."""

    encoder: Net
    decoder: Net
    up: tuple[Net, ...]  # bottom-up: z_l -> q(z_{l+1}|z_l); top-down: h_l -> h_{l+1}
    down: tuple[Net, ...]  # z_{l+1} -> p(z_l | z_{l+1})
    public: bool = True  # torch's own GEMMs, not oneDNN's (the layers' train.matmul)


def layered_plan(model: HierarchicalVAE) -> LayeredPlan | None:
    """The networks to run fused when ``model`` is an MLP Gaussian hierarchy with a
    Bernoulli likelihood, else None. Inspected once per objective."""
    if not (type(model.encoder) is MLPEncoder and type(model.decoder) is MLPDecoder
            and model.decoder.k == 1 and type(model.likelihood) is BernoulliLikelihood
            and type(model.prior_module) is StandardNormal
            and all(type(f) is DiagonalGaussian for f in model.families)
            and all(type(d) is GaussianConditional for d in model.down)
            and torch_private.plain_module(model)):
        return None
    nets = [_mlp_layers(model.encoder.net), _mlp_layers(model.decoder.net)]
    up = [_mlp_layers(u) for u in model.up]
    down = [_mlp_layers(cast(GaussianConditional, d).net) for d in model.down]
    if any(n is None for n in (*nets, *up, *down)):
        return None
    encoder, decoder = cast(list[Net], nets)  # checked above: none is None
    layers = [layer for net in (encoder, decoder, *cast(list[Net], up), *cast(list[Net], down))
              for layer in net[0]]
    return LayeredPlan(encoder, decoder, tuple(cast(list[Net], up)),
                       tuple(cast(list[Net], down)), fastlinear.on_torch_gemm(layers))


def _params(net: Net) -> list[torch.Tensor]:
    return [t for layer in net[0] for t in (layer.weight, layer.bias)]


class _FusedMLP(torch.autograd.Function):
    """(a (N, in), activation, public GEMMs, *params) -> the MLP's output (N, out), one
    node."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, act: str, public: bool, *params: torch.Tensor):
        outs = _mlp_forward(a, list(params), act, public)
        ctx.act, ctx.n, ctx.public = act, len(outs) - 1, public
        ctx.save_for_backward(*outs[:-1], *params)
        return outs[-1]

    @staticmethod
    @once_differentiable  # no double backward: a clear error instead of wrong gradients
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        grads, g_in = _mlp_backward(grad.contiguous(), list(saved[:ctx.n]),
                                    list(saved[ctx.n:]), ctx.act,
                                    input_grad=ctx.needs_input_grad[0], public=ctx.public)
        return (g_in, None, None, *grads)


class _FusedBernoulliDecoder(torch.autograd.Function):
    """(z (K*B, in), x (B, D), K, activation, public GEMMs, *params) -> log p(x|z) (K, B),
    one node:
    the decoder's logits l and sum_i x_i l_i - softplus(l_i); dL/dl = g (sigmoid(l) - x)
    for dL/d(log p) = -g."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, x: torch.Tensor, k: int, act: str, public: bool,
                *params: torch.Tensor):
        outs = _mlp_forward(z, list(params), act, public)
        logits = outs[-1].view(k, x.shape[0], -1)  # (K, B, D)
        rec = (x * logits).sub_(F.softplus(logits)).sum(-1)
        ctx.act, ctx.n, ctx.k, ctx.public = act, len(outs), k, public
        ctx.save_for_backward(*outs, x, *params)
        return rec

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        outs, x, params = saved[:ctx.n], saved[ctx.n], saved[ctx.n + 1:]
        k, b = ctx.k, x.shape[0]
        g = torch.sigmoid(outs[-1]).view(k, b, -1).sub_(x).mul_(grad.neg().unsqueeze(-1))
        grads, g_in = _mlp_backward(g.view(k * b, -1), list(outs[:-1]), list(params),
                                    ctx.act, input_grad=ctx.needs_input_grad[0],
                                    public=ctx.public)
        return (g_in, None, None, None, None, *grads)


def _mlp(net: Net, a: torch.Tensor, public: bool) -> torch.Tensor:
    """The fused MLP on a (*, in): (*, out)."""
    flat = a.reshape(-1, a.shape[-1])
    out = _FusedMLP.apply(flat, net[1], public, *_params(net))
    return out.view(*a.shape[:-1], out.shape[-1])


def _positive(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + MIN_SCALE  # latents.positive


@dataclass
class _Layer:
    """One drawn layer: z = loc + scale * eps (K, B, d) and p(z | the draw above)."""

    z: torch.Tensor
    loc: torch.Tensor  # q's, (B, d) or (K, B, d)
    scale: torch.Tensor
    eps: torch.Tensor  # (K, B, d)
    p_loc: torch.Tensor | None  # None: N(0, I)
    p_scale: torch.Tensor | None
    analytic: bool  # q and p condition on the same draw above

    def log_q_minus_log_p(self) -> torch.Tensor:
        """log q(z|.) - log p(z|.) per dimension at the draw, (K, B, d)."""
        log_q = self.eps.square().mul(-0.5) - self.scale.log()
        if self.p_loc is None:
            return log_q + self.z.square().mul(0.5)
        assert self.p_scale is not None  # set with p_loc
        return log_q + ((self.z - self.p_loc) / self.p_scale).square().mul(0.5) \
            + self.p_scale.log()

    def kl(self) -> torch.Tensor:
        """KL(q || p) per dimension in closed form given the draw above: (B, d) on top
        (``kl.UnitNormal``), (K, B, d) below (torch's ``_kl_normal_normal``)."""
        if self.p_loc is None or self.p_scale is None:  # both None on top
            return 0.5 * (self.loc.square() + self.scale.square() - 1) - self.scale.log()
        var_ratio = (self.scale / self.p_scale).pow(2)
        t1 = ((self.loc - self.p_loc) / self.p_scale).pow(2)
        return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def _noise(k: int, b: int, d: int, first: bool, device: torch.device) -> torch.Tensor:
    """(K, B, d) noise as ``rng.draw`` gives it: the first draw is of a (B,)-batched q with
    sample shape (K,); the later ones of (K, B)-batched q's, sample shape ()."""
    if first:
        return rng.standard_normal(b, d, device, samples=k)
    shard = rng.current_shard()
    if shard.world == 1:
        return torch.randn(k, b, d, device=device)
    return torch.randn(shard.world, k, b, d, device=device)[shard.rank]


def _draw(loc: torch.Tensor, scale: torch.Tensor, k: int, b: int, first: bool
          ) -> tuple[torch.Tensor, torch.Tensor]:
    eps = _noise(k, b, loc.shape[-1], first, loc.device)
    return loc + eps * scale, eps  # Normal.rsample's arithmetic


def _bottom_up(plan: LayeredPlan, h: torch.Tensor, k: int) -> list[_Layer]:
    b = h.shape[0]
    loc, raw = h.chunk(2, dim=-1)
    scale = _positive(raw)
    z, eps = _draw(loc, scale, k, b, first=True)
    qs = [(z, loc, scale, eps)]
    for net in plan.up:
        loc, raw = _mlp(net, qs[-1][0], plan.public).chunk(2, dim=-1)  # q(z_{l+1} | z_l), (K, B)
        scale = _positive(raw)
        z, eps = _draw(loc, scale, k, b, first=False)
        qs.append((z, loc, scale, eps))
    layers = []
    for i, (z, loc, scale, eps) in enumerate(qs):
        if i == len(qs) - 1:
            layers.append(_Layer(z, loc, scale, eps, None, None, analytic=True))
        else:
            p_loc, p_raw = _mlp(plan.down[i], qs[i + 1][0], plan.public).chunk(2, dim=-1)
            layers.append(_Layer(z, loc, scale, eps, p_loc, _positive(p_raw),
                                 analytic=False))  # p reads a later draw
    return layers


def _top_down(plan: LayeredPlan, h: torch.Tensor, k: int, combine: str) -> list[_Layer]:
    b = h.shape[0]
    hs = [h]
    for net in plan.up:
        hs.append(_mlp(net, hs[-1], plan.public))  # (B, 2 d_{l+1})
    loc, raw = hs[-1].chunk(2, dim=-1)
    scale = _positive(raw)
    z, eps = _draw(loc, scale, k, b, first=True)
    layers = [_Layer(z, loc, scale, eps, None, None, analytic=True)]
    for i in range(len(hs) - 2, -1, -1):
        p_loc, p_raw = _mlp(plan.down[i], layers[0].z, plan.public).chunk(2, dim=-1)  # (K, B, d_l)
        p_scale = _positive(p_raw)
        mu_hat, raw = hs[i].chunk(2, dim=-1)
        sigma_hat = _positive(raw)
        if combine == "ladder":  # hierarchical.precision_weighted
            prec_hat, prec_p = sigma_hat.pow(-2), p_scale.pow(-2)
            var = 1.0 / (prec_hat + prec_p)
            loc, scale = (mu_hat * prec_hat + p_loc * prec_p) * var, var.sqrt()
        else:  # hierarchical.residual_normal
            loc, scale = p_loc + mu_hat, p_scale * sigma_hat
        z, eps = _draw(loc, scale, k, b, first=False)
        layers.insert(0, _Layer(z, loc, scale, eps, p_loc, p_scale, analytic=True))
    return layers


def _trace(plan: LayeredPlan, model: HierarchicalVAE, x: torch.Tensor, k: int
           ) -> tuple[list[_Layer], torch.Tensor]:
    """The drawn layers (bottom first) and log p(x|z_1) (K, B)."""
    data, y = model.split(x)
    b = x.shape[0]
    h = _mlp(plan.encoder, model.encoder_input(x).reshape(b, -1), plan.public)  # (B, 2 d_1)
    if model.inference == "bottom-up":
        layers = _bottom_up(plan, h, k)
    else:
        layers = _top_down(plan, h, k, model.combine)
    z1 = layers[0].z
    if model.classes:  # p(x | z_1, y): the decoder reads [z_1, y]
        if y is None:
            y = z1.new_full((model.classes,), 1 / model.classes)
        z1 = torch.cat([z1, y.expand(*z1.shape[:-1], model.classes)], -1)
    rec = _FusedBernoulliDecoder.apply(z1.reshape(k * b, -1), data.reshape(b, -1), k,
                                       plan.decoder[1], plan.public, *_params(plan.decoder))
    return layers, rec


def fused_layered_elbo(plan: LayeredPlan, model: HierarchicalVAE, x: torch.Tensor, *,
                       samples: int = 1, kl: str = "auto", beta: float = 1.0,
                       free_bits: float = 0.0, free_bits_groups: int = 0) -> LayeredOutput:
    """``layered.layered_elbo`` of the model ``plan`` describes: the ELBO with each layer's
    KL in closed form where q and p condition on the same draw (``kl`` auto/analytic), by
    Monte Carlo elsewhere or with ``kl=mc``; free bits per layer."""
    if kl == "analytic" and model.inference == "bottom-up":
        raise NoClosedFormKL("objective.kl=analytic: with model.inference=bottom-up, p(z_l|"
                             "z_{l+1}) reads a draw made after z_l, so the lower layers' KL "
                             "has no closed form; use objective.kl=auto (or top-down)")
    layers, log_px = _trace(plan, model, x, samples)
    rec = log_px.mean(0)  # (B,)
    kl_dims = []
    for layer in layers:
        k = layer.kl() if layer.analytic and kl != "mc" else layer.log_q_minus_log_p()
        kl_dims.append(k.mean(0) if k.dim() == 3 else k)  # (B, d_l)
    kl_values = [k.sum(-1) for k in kl_dims]
    total = cast(torch.Tensor, sum(kl_values))  # a tensor: at least one layer
    if free_bits > 0:
        kl_loss = cast(torch.Tensor, sum(apply_free_bits(k, free_bits, free_bits_groups)
                                         for k in kl_dims))
    else:
        kl_loss = total
    loss = -(rec - beta * kl_loss).mean()
    return LayeredOutput(loss=loss, bound=(rec - total).detach(), rec=rec, kl=total,
                         layer_kl=kl_values)


def fused_layered_iwae(plan: LayeredPlan, model: HierarchicalVAE, x: torch.Tensor, *,
                       samples: int = 5, beta: float = 1.0) -> LayeredOutput:
    """``layered.layered_iwae`` of the model ``plan`` describes: log (1/K) sum_k w_k over
    the joint latent; beta < 1 trains on log p(x|z_1) + beta (log p(z) - log q(z|x)).
    Top-down: everything below the bottom-up pass is one node (``fused_top_down.py``)."""
    if model.inference == "top-down" and model.depth > 1:
        return _top_down_iwae(plan, model, x, samples, beta)
    layers, log_px = _trace(plan, model, x, samples)
    per_layer = [layer.log_q_minus_log_p().sum(-1).neg() for layer in layers]  # (K, B)
    log_ratio = cast(torch.Tensor, sum(per_layer))
    log_w = log_px + log_ratio
    bound = torch.logsumexp(log_w.detach(), 0) - math.log(samples)
    log_w_train = log_w if beta == 1.0 else log_px + beta * log_ratio
    loss = -(torch.logsumexp(log_w_train, 0) - math.log(samples)).mean()
    return LayeredOutput(loss=loss, bound=bound, rec=log_px.mean(0).detach(),
                         kl=(-log_ratio).mean(0).detach(),
                         layer_kl=[-t.mean(0).detach() for t in per_layer])


def _top_down_iwae(plan: LayeredPlan, model: HierarchicalVAE, x: torch.Tensor, k: int,
                   beta: float) -> LayeredOutput:
    data, y = model.split(x)
    b = x.shape[0]
    hs = [_mlp(plan.encoder, model.encoder_input(x).reshape(b, -1), plan.public)]  # (B, 2 d_1)
    for net in plan.up:
        hs.append(_mlp(net, hs[-1], plan.public))
    eps = [_noise(k, b, d, i == model.depth - 1, x.device)  # drawn top first, as layered.py
           for i, d in reversed(list(enumerate(model.sizes)))][::-1]
    if model.classes and y is None:
        y = x.new_full((b, model.classes), 1 / model.classes)
    loss, bound, rec, kl, layer_kl = top_down_iwae(
        data.reshape(b, -1), y, beta, model.combine, hs, eps,
        [(_params(net), net[1]) for net in plan.down], (_params(plan.decoder), plan.decoder[1]),
        public=plan.public)
    return LayeredOutput(loss=loss, bound=bound, rec=rec, kl=kl, layer_kl=list(layer_kl))


def fused_layered(plan: LayeredPlan, model: HierarchicalVAE, x: torch.Tensor, name: str,
                  **kwargs: object) -> LayeredOutput:
    """The objective ``name`` (elbo or iwae) on the fused path."""
    fn = fused_layered_elbo if name == "elbo" else fused_layered_iwae
    if name == "iwae":
        kwargs = {k: v for k, v in kwargs.items() if k in ("samples", "beta")}
    return fn(plan, model, x, **kwargs)  # type: ignore[arg-type]


FUSED_LAYERED_OBJECTIVES: Sequence[str] = ("elbo", "iwae")
