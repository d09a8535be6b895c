"""The ELBO of the common MLP VAE as one autograd node with a hand-derived backward pass.

Which model: MLP encoder -> diagonal Gaussian q(z|x) (softplus scale), N(0, I) prior, MLP
decoder -> Bernoulli p(x|z) on logits, ReLU or tanh between the layers; one pathwise sample
per datapoint and the analytic KL. That is vaelab's default model (ReLU) and the IWAE
paper's VAE (tanh, ``configs/paper.toml``), the ones most people train.

Why: on the CPU, a default training step spends about as long outside its matrix products
as in them (``benchmarks/step_anatomy.py``): some 60 small kernels, each with autograd
bookkeeping, and the Python of modules and distributions. Here the forward pass is 20-odd
kernels (the activation fused into oneDNN's GEMMs) and the backward pass a straight list of
them, with no per-op graph. Same numbers as the general path (``objectives.elbo``) to
float32 rounding, and the same random draws, so a run does not change when the fused path
switches on or off (``tests/inference/test_fused_elbo.py``). It is used only where it applies
(:func:`fused_plan`); ``train.fused=false`` switches it off.

The gradients, with c = dL/dloss / B, l the decoder's logits, z = mu + s * eps and
s = softplus(r) + MIN_SCALE:
  dL/dl = c (sigmoid(l) - x)                           (-log Bernoulli(x; l))
  dL/dmu = dL/dz + c beta mu                           (KL = (mu^2 + s^2 - 1)/2 - log s)
  dL/ds = dL/dz * eps + c beta (s - 1/s);  dL/dr = dL/ds * sigmoid(r)
and for each linear layer y = a W^T + b, then h = act(y) except after the last:
  g = dL/dh times act'(y) ([h > 0] for ReLU, 1 - h^2 for tanh);
  dW = g^T a;  db = sum_rows g;  dL/da = g W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from vaelab.models import fastlinear, torch_private
from vaelab.models.latents import MIN_SCALE, DiagonalGaussian
from vaelab.models.likelihoods import BernoulliLikelihood
from vaelab.models.networks import MLPDecoder, MLPEncoder
from vaelab.models.priors import StandardNormal
from vaelab.models.vae import VAE


@dataclass(frozen=True)
class FusedPlan:
    """The linear layers of a model the fused ELBO applies to."""

    encoder: tuple[nn.Linear, ...]
    decoder: tuple[nn.Linear, ...]
    encoder_act: str  # relu or tanh, between the layers
    decoder_act: str
    latent_dim: int
    public: bool = False  # torch's own GEMMs instead of oneDNN's (the layers' train.matmul)


ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh"}  # oneDNN post-op names


def _mlp_layers(net: nn.Module) -> tuple[tuple[nn.Linear, ...], str] | None:
    """The Linear layers of Linear, act, ..., Linear (vaelab's ``mlp``) and the activation's
    name, when it is ReLU or tanh throughout; else None."""
    if not isinstance(net, nn.Sequential) or len(net) % 2 == 0:
        return None
    layers = list(net)
    linears, acts = layers[0::2], {type(m) for m in layers[1::2]}
    if not all(type(m) is fastlinear.Linear for m in linears):
        return None
    if len(acts) > 1 or not acts <= ACTIVATIONS.keys():
        return None
    # checked above: each is a fastlinear.Linear
    return cast(tuple[nn.Linear, ...], tuple(linears)), ACTIVATIONS[acts.pop()] if acts else "relu"


def fused_plan(model: VAE) -> FusedPlan | None:
    """The layers to run fused when ``model`` is the MLP Gaussian-Bernoulli VAE, else None.
    ``model`` is inspected once per objective: change it later, and build a new objective."""
    if not (type(model.encoder) is MLPEncoder and type(model.decoder) is MLPDecoder
            and type(model.posterior) is DiagonalGaussian
            and type(model.prior_module) is StandardNormal
            and type(model.likelihood) is BernoulliLikelihood
            and model.decoder.k == 1 and torch_private.plain_module(model)):
        return None
    encoder = _mlp_layers(model.encoder.net)
    decoder = _mlp_layers(model.decoder.net)
    if encoder is None or decoder is None:
        return None
    return FusedPlan(encoder[0], decoder[0], encoder[1], decoder[1],
                     model.posterior.latent_shape[0],
                     fastlinear.on_torch_gemm((*encoder[0], *decoder[0])))


def _linear(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, act: str,
            public: bool = False) -> torch.Tensor:
    """act(a W^T + b), act one of none, relu, tanh; ``public``: torch's own GEMM. Called
    where autograd does not record (inside the fused nodes, or under no_grad), so the
    activation may overwrite the product in place."""
    if not public and fastlinear.onednn_for(a):
        return torch_private.linear_pointwise(a, weight, bias, act)
    out = F.linear(a, weight, bias)  # torch's GEMM, float64 (gradcheck), no oneDNN op
    if act == "none":
        return out
    return out.relu_() if act == "relu" else out.tanh_()


def _mm_t(a: torch.Tensor, b: torch.Tensor, public: bool = False) -> torch.Tensor:
    """a @ b^T (either a strided view); ``public``: torch's own GEMM."""
    if not public and fastlinear.onednn_for(a):
        return fastlinear._mm_t(a, b)
    return fastlinear._mm_t_differentiable(a, b)


def _mlp_forward(a: torch.Tensor, params: list[torch.Tensor], act: str, public: bool = False
                 ) -> list[torch.Tensor]:
    """Each layer's input, then the output: [a, h1, ..., out]. ``public``: torch's own GEMMs
    (``torch.addmm``, MKL) instead of the oneDNN route (used by ``fused_layered.py``)."""
    outs = [a]
    n = len(params) // 2
    for i in range(n):
        outs.append(_linear(outs[-1], params[2 * i], params[2 * i + 1],
                            act if i < n - 1 else "none", public))
    return outs


def _mlp_backward(g: torch.Tensor, inputs: list[torch.Tensor], params: list[torch.Tensor],
                  act: str, input_grad: bool, public: bool = False
                  ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Parameter gradients (W1, b1, W2, ...) and dL/d(input) from g = dL/d(output);
    ``inputs`` are the layers' inputs, so layer i's activation output is ``inputs[i + 1]``."""
    n = len(params) // 2
    grads: list[torch.Tensor] = [torch.empty(0)] * (2 * n)
    for i in reversed(range(n)):
        if i < n - 1:  # through the activation, one kernel each
            h = inputs[i + 1]
            g = torch_private.relu_backward(g, h) if act == "relu" \
                else torch_private.tanh_backward(g, h)
        grads[2 * i] = _mm_t(g.t(), inputs[i].t(), public)
        grads[2 * i + 1] = g.sum(0)
        if i > 0 or input_grad:
            g = _mm_t(g, params[2 * i].t(), public)
    return grads, (g if input_grad else None)


class _FusedGaussianBernoulliElbo(torch.autograd.Function):
    """(x, eps, beta, encoder params' count, encoder and decoder activations, public GEMMs,
    *encoder params, *decoder params) -> (loss, rec, kl); rec and kl (B,) are not
    differentiable outputs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: torch.Tensor, beta: float, n_encoder: int,
                enc_act: str, dec_act: str, public: bool, *params: torch.Tensor):
        enc_params, dec_params = list(params[:n_encoder]), list(params[n_encoder:])
        d = eps.shape[1]
        enc = _mlp_forward(x, enc_params, enc_act, public)
        mu, raw = enc[-1][:, :d], enc[-1][:, d:]
        scale = F.softplus(raw).add_(MIN_SCALE)
        z = torch.addcmul(mu, scale, eps)
        dec = _mlp_forward(z, dec_params, dec_act, public)
        logits = dec[-1]
        rec = (x * logits).sub_(F.softplus(logits)).sum(1)
        kl = (0.5 * (mu.square() + scale.square() - 1)).sub_(scale.log()).sum(1)
        loss = (beta * kl - rec).mean()
        ctx.beta, ctx.n_encoder, ctx.acts, ctx.public = beta, n_encoder, (enc_act, dec_act), public
        ctx.save_for_backward(eps, mu, raw, scale, *enc[:-1], *dec[:-1], logits, *params)
        ctx.n_enc_acts, ctx.n_dec_acts = len(enc) - 1, len(dec) - 1
        ctx.mark_non_differentiable(rec, kl)
        return loss, rec, kl

    @staticmethod
    @once_differentiable  # no double backward: a clear error instead of wrong gradients
    def backward(ctx, grad_loss: torch.Tensor, _grad_rec, _grad_kl):
        saved = list(ctx.saved_tensors)
        eps, mu, raw, scale = saved[:4]
        enc_acts = saved[4:4 + ctx.n_enc_acts]
        dec_acts = saved[4 + ctx.n_enc_acts:4 + ctx.n_enc_acts + ctx.n_dec_acts]
        logits = saved[4 + ctx.n_enc_acts + ctx.n_dec_acts]
        params = saved[5 + ctx.n_enc_acts + ctx.n_dec_acts:]
        enc_params, dec_params = params[:ctx.n_encoder], params[ctx.n_encoder:]
        x = enc_acts[0]
        c = grad_loss / x.shape[0]
        cb = c * ctx.beta
        g_logits = torch.sigmoid(logits).sub_(x).mul_(c)
        dec_grads, g_z = _mlp_backward(g_logits, dec_acts, dec_params, ctx.acts[1],
                                       input_grad=True, public=ctx.public)
        assert g_z is not None  # input_grad=True returns dL/dz
        g_mu = g_z + cb * mu
        g_scale = torch.addcmul(cb * (scale - scale.reciprocal()), g_z, eps)
        g_raw = g_scale.mul_(torch.sigmoid(raw))
        enc_grads, _ = _mlp_backward(torch.cat([g_mu, g_raw], 1), enc_acts, enc_params,
                                     ctx.acts[0], input_grad=False, public=ctx.public)
        return (None, None, None, None, None, None, None, *enc_grads, *dec_grads)


def fused_gaussian_bernoulli_elbo(plan: FusedPlan, x: torch.Tensor, eps: torch.Tensor,
                                  beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, rec, kl) of the model ``plan`` describes at data x (B, ...) and noise eps (B, d):
    loss = mean_b(beta KL_b - rec_b), as ``objectives.elbo`` with one sample."""
    params = [t for layer in (*plan.encoder, *plan.decoder) for t in (layer.weight, layer.bias)]
    return _FusedGaussianBernoulliElbo.apply(x.reshape(x.shape[0], -1), eps, float(beta),
                                             2 * len(plan.encoder), plan.encoder_act,
                                             plan.decoder_act, plan.public, *params)


def fused_applies(x: torch.Tensor) -> bool:
    """The run-time conditions: a float32 CPU batch that needs no gradient of its own,
    gradients on, no autocast, not traced."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and not x.requires_grad
            and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())
