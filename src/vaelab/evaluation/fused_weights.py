"""Importance weights of the MLP Gaussian-Bernoulli VAE without distribution objects: the
inner loop of the importance-sampled log-likelihood.

Why: with K=5000 samples the evaluator decodes 5x10^7 latents over MNIST's 10k test
images. Besides the decoder's GEMMs, the general path spends nearly as much on
element-wise work over the (K, B, D) logits: ``Independent(Bernoulli).log_prob`` expands x,
computes the BCE in five passes and sums (34.6 ms per 250 x 20 x 784 chunk on one thread
of the 2-core test machine, under load), where x . l + sum softplus(l) takes two (12.4 ms).
The whole evaluation: 1.42x (``benchmarks/eval_speed.py``, 2 quiet threads).
Same model as ``inference/fused_elbo.py`` (its ``FusedPlan``), same draws as
``q.sample((k,))`` (``torch.normal`` on the expanded loc and scale) and the same weights to
float32 rounding (``tests/evaluation/test_fused_weights.py``):

    log w_k = sum_i [x_i l_ki - softplus(l_ki)] + log N(z_k; 0, I) - log N(z_k; mu, s^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaelab.inference.fused_elbo import FusedPlan, _mlp_forward


@torch.no_grad()
def fused_log_weights(plan: FusedPlan, x: torch.Tensor, k: int, loc: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """log w (k, B) of k draws from q(z|x) = N(loc, scale^2) (B, d) for each row of x
    (B, ...): the model's ``encode(x)`` once per batch, then this once per chunk of k."""
    x = x.reshape(x.shape[0], -1)
    b, d = loc.shape
    z = torch.normal(loc.expand(k, b, d), scale.expand(k, b, d))  # as Normal.sample((k,))
    params = [t for layer in plan.decoder for t in (layer.weight, layer.bias)]
    logits = _mlp_forward(z.view(k * b, d), params, plan.decoder_act, plan.public)[-1]
    logits = logits.view(k, b, -1)
    rec = torch.einsum("kbd,bd->kb", logits, x).sub_(F.softplus(logits).sum(-1))
    half_log_2pi = 0.5 * d * math.log(2 * math.pi)
    log_p = z.square().sum(-1).mul_(-0.5).sub_(half_log_2pi)
    std = (z - loc).div_(scale)
    log_q = std.square_().sum(-1).mul_(-0.5).sub_(scale.log().sum(-1)).sub_(half_log_2pi)
    return rec.add_(log_p).sub_(log_q)
