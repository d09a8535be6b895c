"""The IWAE bound of a top-down Gaussian hierarchy below its bottom-up pass as one autograd
node with a hand-derived backward pass.

Which part: given the deterministic bottom-up pass h_1..h_L (B, 2 d_l) (the encoder and
``up`` networks, fused nodes of ``fused_layered.py``), the noise eps_l (K, B, d_l), the
``down`` networks and the decoder, this node computes the top-down draws, every layer's
log p - log q, the Bernoulli log p(x|z_1) and the IWAE loss; its backward pass returns
dL/dh_l (which autograd sends on into the bottom-up networks) and the gradients of the
``down`` and decoder parameters. Why: the latent algebra between the networks is some 60
small kernels with autograd bookkeeping per step; here it is one straight list.

Forward, for layer l below the top, with p(z_l|z_{l+1}) = N(m, t^2) from ``down`` and
(mu_h, s_h) = (h_l's first half, positive(second half)):

* ladder (LVAE):   P = s_h^-2 + t^-2, v = 1/P, mu = (mu_h s_h^-2 + m t^-2) v, s = sqrt(v);
* residual (NVAE): mu = m + mu_h, s = t s_h;
* z = mu + s eps, u = (z - m)/t, r_l = sum_d [-u^2/2 - log t + eps^2/2 + log s]
  (log p - log q at the draw; the 2 pi terms cancel); on top r_L = sum_d
  [-z^2/2 + eps^2/2 + log s] against N(0, I).

log w = log p(x|z_1) + beta sum_l r_l; loss = -mean_b [logsumexp_k log w - log K].
Backward with G = dL/dr_l = -c a beta (a = softmax_k log w, c = dL/dloss / B), per layer:
  dz <- dz + G (-u/t);  dmu = dz;  ds = dz eps + G/s;
  ladder:  dv = dmu N + ds/(2 s), dN = dmu v, dP = -dv v^2, with N = mu_h s_h^-2 + m t^-2:
           dmu_h = sum_k dN s_h^-2, dm = dN t^-2 + G u/t,
           ds_h = -2 s_h^-3 sum_k (dP + dN mu_h), dt = -2 t^-3 (dP + dN m) + G (u^2 - 1)/t;
  residual: dmu_h = sum_k dmu, dm = dmu + G u/t, ds_h = sum_k ds t, dt = ds s_h + G (u^2-1)/t;
  d(raw) = d(scale) sigmoid(raw)  (scale = softplus(raw) + MIN_SCALE).
Same numbers as ``layered.layered_iwae`` to float32 rounding and the same draws
(``tests/inference/test_layered_fused.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from vaelab.inference.fused_elbo import _mlp_backward, _mlp_forward
from vaelab.inference.fused_iwae import negligible_to_zero
from vaelab.models.latents import MIN_SCALE


def _scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw).add_(MIN_SCALE)  # latents.positive


class _TopDownIwae(torch.autograd.Function):
    """(x (B, D), y (B, C) or empty, beta, spec, *hs, *eps, *down params, *decoder params)
    -> (loss, bound, rec, kl, layer_kl (L, B)); all but the loss are not differentiable.
    ``spec`` = (L, combine, down parameter counts, down activation, decoder activation,
    public GEMMs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, beta: float, spec: tuple,
                *tensors: torch.Tensor):
        depth, combine, n_down, down_act, dec_act, public = spec
        hs, eps = list(tensors[:depth]), list(tensors[depth:2 * depth])
        params = list(tensors[2 * depth:])
        downs, i = [], 0
        for n in n_down:
            downs.append(params[i:i + n])
            i += n
        dec_params = params[i:]
        k, b = eps[0].shape[:2]
        top_mu, top_raw = hs[-1].chunk(2, dim=-1)
        top_s = _scale(top_raw)
        z = top_mu + eps[-1] * top_s  # (K, B, d_L)
        ratios = [z.square().sub(eps[-1].square()).mul_(-0.5).add_(top_s.log()).sum(-1)]
        saved: list[list[torch.Tensor]] = []  # per layer below the top, bottom last
        zs = [z]
        for l in range(depth - 2, -1, -1):
            d = eps[l].shape[-1]
            outs = _mlp_forward(zs[-1].reshape(k * b, -1), downs[l], down_act, public)
            m, t_raw = outs[-1].view(k, b, 2 * d).chunk(2, dim=-1)
            t = _scale(t_raw)
            mu_h, raw_h = hs[l].chunk(2, dim=-1)
            s_h = _scale(raw_h)
            if combine == "ladder":
                prec_h, prec_p = s_h.pow(-2), t.pow(-2)
                v = (prec_h + prec_p).reciprocal_()
                n = mu_h * prec_h + m * prec_p
                mu, s = n * v, v.sqrt()
                extra = [prec_h, prec_p, v, n]
            else:
                mu, s = m + mu_h, t * s_h
                extra = []
            z = mu + eps[l] * s
            u = (z - m) / t
            ratios.insert(0, (u.square().sub_(eps[l].square()).mul_(-0.5)
                              .add_(s.log()).sub_(t.log())).sum(-1))
            saved.append([m, t, t_raw, mu_h, s_h, raw_h, s, u, *extra, *outs[:-1]])
            zs.append(z)
        z1 = zs[-1]
        dec_in = torch.cat([z1, y.expand(k, b, y.shape[-1])], -1) if y.numel() else z1
        dec = _mlp_forward(dec_in.reshape(k * b, -1), dec_params, dec_act, public)
        logits = dec[-1].view(k, b, -1)
        rec = (x * logits).sub_(F.softplus(logits)).sum(-1)  # (K, B)
        ratio = torch.stack(ratios)  # (L, K, B)
        log_ratio = ratio.sum(0)
        log_w = rec + log_ratio
        log_w_train = log_w if beta == 1.0 else rec + beta * log_ratio
        lse = torch.logsumexp(log_w_train, 0)
        weights = negligible_to_zero((log_w_train - lse).exp_())  # see fused_iwae.py
        loss = -(lse - math.log(k)).mean()
        bound = (lse if beta == 1.0 else torch.logsumexp(log_w, 0)) - math.log(k)
        ctx.spec, ctx.beta, ctx.shape = spec, beta, (k, b)
        ctx.n_saved = [len(s_) for s_ in saved]
        ctx.n_dec = len(dec)
        flat = [t_ for s_ in saved for t_ in s_]
        ctx.save_for_backward(x, weights, top_raw, top_s, *zs, *eps, *flat, *dec, *params)
        outputs = (bound, rec.mean(0), (-log_ratio).mean(0), ratio.mean(1).neg())
        ctx.mark_non_differentiable(*outputs)
        return (loss, *outputs)

    @staticmethod
    @once_differentiable  # no double backward: a clear error instead of wrong gradients
    def backward(ctx, grad_loss: torch.Tensor, *_unused):
        depth, combine, n_down, down_act, dec_act, public = ctx.spec
        k, b = ctx.shape
        saved = list(ctx.saved_tensors)
        x, weights, top_raw, top_s = saved[:4]
        i = 4
        zs = saved[i:i + depth]  # top first
        i += depth
        eps = saved[i:i + depth]
        i += depth
        layers = []
        for n in ctx.n_saved:
            layers.append(saved[i:i + n])
            i += n
        dec = saved[i:i + ctx.n_dec]
        params = saved[i + ctx.n_dec:]
        downs, j = [], 0
        for n in n_down:
            downs.append(params[j:j + n])
            j += n
        dec_params = params[j:]
        ca = weights.mul(grad_loss / b)  # (K, B): -dL/d(log w)
        g_logits = torch.sigmoid(dec[-1]).view(k, b, -1).sub_(x).mul_(ca.unsqueeze(-1))
        dec_grads, g_in = _mlp_backward(g_logits.view(k * b, -1), dec[:-1], dec_params,
                                        dec_act, input_grad=True, public=public)
        assert g_in is not None  # input_grad=True returns dL/d(input)
        d1 = eps[0].shape[-1]
        g_z = g_in.view(k, b, -1)[..., :d1]
        g = ca.mul(-ctx.beta).unsqueeze(-1)  # G = dL/dr_l, (K, B, 1)
        g_hs: list[torch.Tensor] = [torch.empty(0)] * depth
        down_grads: list[list[torch.Tensor]] = [[] for _ in range(depth - 1)]
        for pos, l in enumerate(range(depth - 1)):  # bottom up: saved is in top-down order
            m, t, t_raw, mu_h, s_h, raw_h, s, u, *rest = layers[depth - 2 - pos]
            extra, down_inputs = (rest[:4], rest[4:]) if combine == "ladder" else ([], rest)
            u_t = u / t
            g_z = g_z - g * u_t
            g_s = g_z * eps[l] + g / s
            g_t = g * (u.square() - 1) / t
            if combine == "ladder":
                prec_h, prec_p, v, n = extra
                g_n = g_z * v
                g_p = -(g_z * n + g_s * 0.5 / s) * v * v  # dL/dP
                g_mu_h = (g_n.sum(0) * prec_h)
                g_m = g_n * prec_p + g * u_t
                g_s_h = -2 * prec_h / s_h * (g_p + g_n * mu_h).sum(0)
                g_t = g_t - 2 * prec_p / t * (g_p + g_n * m)
            else:
                g_mu_h = g_z.sum(0)
                g_m = g_z + g * u_t
                g_s_h = (g_s * t).sum(0)
                g_t = g_t + g_s * s_h
            g_hs[l] = torch.cat([g_mu_h, g_s_h * torch.sigmoid(raw_h)], -1)
            g_down = torch.cat([g_m, g_t * torch.sigmoid(t_raw)], -1).view(k * b, -1)
            down_grads[l], g_above = _mlp_backward(g_down, down_inputs, downs[l], down_act,
                                                   input_grad=True, public=public)
            assert g_above is not None
            g_z = g_above.view(k, b, -1)
        z_top = zs[0]
        g_z = g_z - g * z_top
        g_s_top = (g_z * eps[-1]).sum(0) + g.sum(0) / top_s
        g_hs[-1] = torch.cat([g_z.sum(0), g_s_top * torch.sigmoid(top_raw)], -1)
        flat_down = [t_ for grads in down_grads for t_ in grads]
        return (None, None, None, None, *g_hs, *[None] * depth, *flat_down, *dec_grads)


def top_down_iwae(x: torch.Tensor, y: torch.Tensor | None, beta: float, combine: str,
                  hs: list[torch.Tensor], eps: list[torch.Tensor],
                  downs: list[tuple[list[torch.Tensor], str]],
                  decoder: tuple[list[torch.Tensor], str], public: bool = True
                  ) -> tuple[torch.Tensor, ...]:
    """(loss, bound, rec, kl, layer_kl (L, B)) of a top-down hierarchy, as
    ``layered.layered_iwae``: x (B, D) the data, y (B, C) its one-hot labels or None,
    hs[l] (B, 2 d_l) the bottom-up pass, eps[l] (K, B, d_l) the noise (bottom first),
    downs[l] (parameters, activation) of the network z_{l+1} -> p(z_l|z_{l+1}), decoder
    the same for z_1 (or [z_1, y]) -> logits; ``public``: torch's own GEMMs, not oneDNN's."""
    acts = {act for _, act in downs}
    if len(acts) > 1:
        raise ValueError("the fused top-down node takes one activation for all down networks")
    spec = (len(hs), combine, tuple(len(p) for p, _ in downs), acts.pop(), decoder[1], public)
    params = [t for p, _ in downs for t in p] + list(decoder[0])
    labels = y if y is not None else x.new_zeros(0)
    return _TopDownIwae.apply(x, labels, float(beta), spec, *hs, *eps, *params)
