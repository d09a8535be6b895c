"""The IWAE bound of the common MLP VAE as one autograd node with a hand-derived backward.

The model is the fused ELBO's (``fused_elbo.py``: MLP encoder -> diagonal Gaussian q(z|x),
N(0, I) prior, MLP decoder -> Bernoulli logits, ReLU or tanh) with K pathwise samples per
datapoint and the IWAE bound of Burda et al. 2016 (``objectives.iwae``): the IWAE rows of
the paper's table (``configs/paper-iwae5.toml``, ``paper-iwae50.toml``, ``paper-best.toml``).
Why: the general path builds the distributions' graph over (K, B) tensors, some 80 kernels
with autograd bookkeeping; here the decoder's K*B rows go through oneDNN GEMMs with the
activation fused (or torch's GEMMs, whichever ``train.matmul`` chose), and the backward
pass is a straight list of kernels. Same numbers as ``objectives.iwae`` to float32 rounding
and the same random draws (``tests/inference/test_fused_iwae.py``); ``train.fused=false``
switches it off.

With eps (K, B, d), z = mu + s * eps, s = softplus(r) + MIN_SCALE, l the decoder's logits:
  log w_beta = log p(x|z) + beta (log p(z) - log q(z|x)),
  log q(z|x) = -|eps|^2 / 2 - sum log s - d/2 log 2 pi   (the same function of mu, s at
  fixed eps as Normal(mu, s).log_prob(z), so the same value and gradients),
  loss = -mean_b [logsumexp_k log w_beta - log K].
With c = dL/dloss / B and a = softmax_k(log w_beta) (K, B):
  dL/dl = c a (sigmoid(l) - x);  dL/dz = (decoder's backward) + c a beta z;
  dL/dmu = sum_k dL/dz;  dL/ds = sum_k dL/dz * eps - c beta / s  (sum_k a = 1);
  dL/dr = dL/ds * sigmoid(r).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from vaelab.inference.fused_elbo import FusedPlan, _mlp_backward, _mlp_forward
from vaelab.models.latents import MIN_SCALE

NEGLIGIBLE = 1e-20  # importance weights below this are dropped (negligible_to_zero)


def negligible_to_zero(weights: torch.Tensor) -> torch.Tensor:
    """The normalized importance weights (K, B) with those below ``NEGLIGIBLE`` set to 0, in
    place.

    Why: with K=50 samples, most weights of a trained model are e^-100 or less, subnormal
    floats; multiplied into the decoder's gradient they fill the backward GEMMs with
    subnormal operands, which x86 CPUs process through slow microcode assists: the
    ``paper-iwae50`` step slowed from 1,000 to 500 images/s within three short epochs
    (2 threads), and ran at 1,140 with subnormals flushed (``torch.set_flush_denormal``).
    A weight under 1e-20 changes no float32 gradient: each datapoint's largest weight is at
    least 1/K, so the dropped terms are more than 10 orders of magnitude below the rounding
    of the sums they would join."""
    return weights.masked_fill_(weights < NEGLIGIBLE, 0.0)


class _FusedGaussianBernoulliIwae(torch.autograd.Function):
    """(x, eps (K, B, d), beta, encoder params' count, activations, public GEMMs, *params)
    -> (loss, bound, rec, kl); the last three (B,) are not differentiable outputs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: torch.Tensor, beta: float, n_encoder: int,
                enc_act: str, dec_act: str, public: bool, *params: torch.Tensor):
        enc_params, dec_params = list(params[:n_encoder]), list(params[n_encoder:])
        k, b, d = eps.shape
        enc = _mlp_forward(x, enc_params, enc_act, public)
        mu, raw = enc[-1][:, :d], enc[-1][:, d:]
        scale = F.softplus(raw).add_(MIN_SCALE)
        z = torch.addcmul(mu, scale, eps)  # (K, B, d)
        dec = _mlp_forward(z.view(k * b, d), dec_params, dec_act, public)
        logits = dec[-1].view(k, b, -1)
        rec = (x * logits).sub_(F.softplus(logits)).sum(-1)  # (K, B) log p(x|z)
        half_log_2pi = 0.5 * d * math.log(2 * math.pi)
        log_p = z.square().sum(-1).mul_(-0.5).sub_(half_log_2pi)
        log_q = eps.square().sum(-1).mul_(-0.5).sub_(scale.log().sum(-1)).sub_(half_log_2pi)
        log_w = rec + log_p - log_q
        log_w_train = log_w if beta == 1.0 else rec + beta * (log_p - log_q)
        lse = torch.logsumexp(log_w_train, 0)  # (B,)
        weights = negligible_to_zero((log_w_train - lse).exp_())  # softmax over the K samples
        loss = -(lse - math.log(k)).mean()
        bound = torch.logsumexp(log_w, 0) - math.log(k) if beta != 1.0 else lse - math.log(k)
        ctx.beta, ctx.n_encoder, ctx.acts, ctx.public = beta, n_encoder, (enc_act, dec_act), public
        ctx.shape = (k, b, d)
        ctx.save_for_backward(eps, raw, scale, weights, *enc[:-1], *dec[:-1], dec[-1],
                              *params)
        ctx.n_enc_acts, ctx.n_dec_acts = len(enc) - 1, len(dec) - 1
        rec_mean, kl_mean = rec.mean(0), (log_q - log_p).mean(0)
        ctx.mark_non_differentiable(bound, rec_mean, kl_mean)
        return loss, bound, rec_mean, kl_mean

    @staticmethod
    @once_differentiable  # no double backward: a clear error instead of wrong gradients
    def backward(ctx, grad_loss: torch.Tensor, *_unused):
        saved = list(ctx.saved_tensors)
        eps, raw, scale, weights = saved[:4]
        i = 4
        enc_acts = saved[i:i + ctx.n_enc_acts]
        i += ctx.n_enc_acts
        dec_acts = saved[i:i + ctx.n_dec_acts]
        i += ctx.n_dec_acts
        logits = saved[i]  # (K*B, D)
        params = saved[i + 1:]
        enc_params, dec_params = params[:ctx.n_encoder], params[ctx.n_encoder:]
        k, b, d = ctx.shape
        x = enc_acts[0]
        c = grad_loss / b
        ca = weights.mul(c)  # (K, B)
        g_logits = torch.sigmoid(logits).view(k, b, -1).sub_(x).mul_(ca.unsqueeze(-1))
        dec_grads, g_zf = _mlp_backward(g_logits.view(k * b, -1), dec_acts, dec_params,
                                        ctx.acts[1], input_grad=True, public=ctx.public)
        assert g_zf is not None  # input_grad=True returns dL/dz
        z = dec_acts[0].view(k, b, d)
        g_z = torch.addcmul(g_zf.view(k, b, d), z, ca.mul_(ctx.beta).unsqueeze(-1))
        g_mu = g_z.sum(0)
        g_scale = (g_z * eps).sum(0).sub_(scale.reciprocal().mul_(c * ctx.beta))
        g_raw = g_scale.mul_(torch.sigmoid(raw))
        enc_grads, _ = _mlp_backward(torch.cat([g_mu, g_raw], 1), enc_acts, enc_params,
                                     ctx.acts[0], input_grad=False, public=ctx.public)
        return (None, None, None, None, None, None, None, *enc_grads, *dec_grads)


def fused_gaussian_bernoulli_iwae(plan: FusedPlan, x: torch.Tensor, eps: torch.Tensor,
                                  beta: float
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]:
    """(loss, bound, rec, kl) of the model ``plan`` describes at data x (B, ...) and noise
    eps (K, B, d), as ``objectives.iwae``: bound (B,) the IWAE bound at beta = 1, rec and kl
    (B,) the means over the K samples of log p(x|z) and log q(z|x) - log p(z)."""
    params = [t for layer in (*plan.encoder, *plan.decoder) for t in (layer.weight, layer.bias)]
    return _FusedGaussianBernoulliIwae.apply(x.reshape(x.shape[0], -1), eps, float(beta),
                                             2 * len(plan.encoder), plan.encoder_act,
                                             plan.decoder_act, plan.public, *params)
