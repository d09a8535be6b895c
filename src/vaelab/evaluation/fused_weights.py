"""Importance weights of the MLP Gaussian-Bernoulli VAE without distribution objects: the
inner loop of the importance-sampled log-likelihood.

Why: with K=5000 samples the evaluator decodes 5x10^7 latents over MNIST's 10k test
images. Besides the decoder's GEMMs, the general path spends nearly as much on
element-wise work over the (K, B, D) logits: ``Independent(Bernoulli).log_prob`` expands x,
computes the BCE in five passes and sums (34.6 ms per 250 x 20 x 784 chunk on one thread
of the 2-core test machine, under load), where x . l + sum softplus(l) takes two (12.4 ms).
The whole evaluation of ``configs/paper.toml``'s model, with the decoder's row blocks
(``BLOCK_ROWS``): 1.71x the general path (``benchmarks/eval_speed.py``, 2 threads).
Same model as ``inference/fused_elbo.py`` (its ``FusedPlan``), same draws as
``q.sample((k,))`` (``torch.normal`` on the expanded loc and scale) and the same weights to
float32 rounding (``tests/evaluation/test_fused_weights.py``):

    log w_k = sum_i [x_i l_ki - softplus(l_ki)] + log N(z_k; 0, I) - log N(z_k; mu, s^2).

Other latents and priors with the same MLP Bernoulli decoder (a mixture or VampPrior, a
full-covariance posterior, Bernoulli or categorical codes): :func:`decoder_log_prob` gives
the first term the same way and the distribution objects the other two, from the general
path's own draws ``q.sample((k,))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vaelab.inference.fused_elbo import FusedPlan, _mlp_forward, _mlp_layers
from vaelab.models import fastlinear, torch_private
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.likelihoods import BernoulliLikelihood
from vaelab.models.networks import MLPDecoder
from vaelab.models.vae import VAE


@dataclass(frozen=True)
class DecoderPlan:
    """The linear layers of an MLP decoder with a Bernoulli likelihood on its logits."""

    params: tuple[torch.Tensor, ...]  # W1, b1, W2, b2, ...
    act: str  # relu or tanh, between the layers
    public: bool  # torch's own GEMMs instead of oneDNN's (the layers' train.matmul)


def decoder_plan(model: VAE | HierarchicalVAE) -> DecoderPlan | None:
    """The decoder to run without distribution objects when p(x|z) (p(x|z_1) of a
    hierarchy) is vaelab's MLP Bernoulli decoder (any posterior and prior), else None."""
    if isinstance(model, HierarchicalVAE):
        own_decoding = type(model)._px is HierarchicalVAE._px \
            and type(model).decoder_input is HierarchicalVAE.decoder_input
    else:
        own_decoding = type(model).decode is VAE.decode
    if not (type(model.decoder) is MLPDecoder and type(model.likelihood) is BernoulliLikelihood
            and model.decoder.k == 1 and own_decoding and torch_private.plain_module(model)):
        return None
    layers = _mlp_layers(model.decoder.net)
    if layers is None:
        return None
    return DecoderPlan(tuple(t for layer in layers[0] for t in (layer.weight, layer.bias)),
                       layers[1], fastlinear.on_torch_gemm(layers[0]))


# Rows of z decoded at a time. The evaluator's chunk (250 samples x 20 images = 5,000 rows)
# makes a 15.7 MB logits tensor that each element-wise pass streams from memory; 2,000 rows
# (6.3 MB) ran the whole K=5000 evaluation of configs/paper.toml 1.27x faster on this
# machine's 2 cores (benchmarks/eval_speed.py --sides fused,fused-unblocked,general; 1,000
# and 2,000 rows alike, 5,000 the slowest). Only how the work is cut
# changes: the same draws, and each row's log p(x|z) to float32 rounding.
BLOCK_ROWS = 2000


def _bernoulli_log_prob(params: list[torch.Tensor], act: str, public: bool,
                        z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i [x_i l_i - softplus(l_i)] with l = the MLP's logits of z (k, B, d), for x
    (B, D): log Bernoulli(x; sigmoid(l)) in two passes over the logits, (k, B), decoded
    ``BLOCK_ROWS`` rows of z at a time on the CPU (a GPU takes the chunk in one piece)."""
    k, b, d = z.shape
    out = z.new_empty(k, b)
    step = max(1, BLOCK_ROWS // b) if z.device.type == "cpu" else k
    for i in range(0, k, step):
        block = z[i:i + step]
        logits = _mlp_forward(block.reshape(-1, d), params, act, public)[-1]
        logits = logits.view(block.shape[0], b, -1)
        rows = torch.einsum("kbd,bd->kb", logits, x).sub_(F.softplus(logits).sum(-1))
        out[i:i + step] = rows
    return out


@torch.no_grad()
def decoder_log_prob(plan: DecoderPlan, model: VAE, z: torch.Tensor,
                     x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) (k, B) for draws z (k, B, *latent_shape) and data x (B, ...): the value of
    ``model.decode(z).log_prob(x)`` to float32 rounding."""
    k, b = z.shape[:2]
    flat = model.posterior.flatten(z).reshape(k, b, -1)
    return _bernoulli_log_prob(list(plan.params), plan.act, plan.public, flat,
                               x.reshape(b, -1))


@torch.no_grad()
def layered_log_prob(plan: DecoderPlan, model: HierarchicalVAE, z1: torch.Tensor,
                     x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log p(x|z_1) (or p(x|z_1, y)) (k, B) for draws z_1 (k, B, d_1), data x (B, ...) and
    labels y (B, C) or None: ``model.trace``'s ``px.log_prob(x)`` to float32 rounding."""
    return _bernoulli_log_prob(list(plan.params), plan.act, plan.public,
                               model.decoder_input(z1, y), x.reshape(z1.shape[1], -1))


@torch.no_grad()
def fused_log_weights(plan: FusedPlan, x: torch.Tensor, k: int, loc: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """log w (k, B) of k draws from q(z|x) = N(loc, scale^2) (B, d) for each row of x
    (B, ...): the model's ``encode(x)`` once per batch, then this once per chunk of k."""
    x = x.reshape(x.shape[0], -1)
    b, d = loc.shape
    z = torch.normal(loc.expand(k, b, d), scale.expand(k, b, d))  # as Normal.sample((k,))
    params = [t for layer in plan.decoder for t in (layer.weight, layer.bias)]
    rec = _bernoulli_log_prob(params, plan.decoder_act, plan.public, z, x)
    half_log_2pi = 0.5 * d * math.log(2 * math.pi)
    log_p = z.square().sum(-1).mul_(-0.5).sub_(half_log_2pi)
    std = (z - loc).div_(scale)
    log_q = std.square_().sum(-1).mul_(-0.5).sub_(scale.log().sum(-1)).sub_(half_log_2pi)
    return rec.add_(log_p).sub_(log_q)
