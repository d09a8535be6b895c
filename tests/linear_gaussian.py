"""A linear-Gaussian VAE whose log p(x) and posterior are known exactly.

z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so p(x) = N(x; b, W W^T + s^2 I) and
p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^{-1}.
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.models.vae import VAE


class LinearGaussian:
    def __init__(self, data_dim: int = 5, latent_dim: int = 2, noise_std: float = 0.5,
                 seed: int = 0, posterior: str = "gaussian"):
        gen = torch.Generator().manual_seed(seed)
        self.d, self.D, self.s = latent_dim, data_dim, noise_std
        cfg = ModelConfig(latent=posterior, latent_dim=latent_dim, hidden=[],
                          likelihood="gaussian", likelihood_std=noise_std,
                          likelihood_variance="fixed")
        torch.manual_seed(seed)
        self.model: VAE = build_model(cfg, (data_dim,)).double()
        lin = self.model.decoder.output_layer
        with torch.no_grad():
            lin.weight.copy_(torch.randn(data_dim, latent_dim, generator=gen, dtype=torch.double))
            lin.bias.copy_(torch.randn(data_dim, generator=gen, dtype=torch.double))
        self.W = lin.weight.detach().clone()
        self.b = lin.bias.detach().clone()
        eye = torch.eye(latent_dim, dtype=torch.double)
        self.S = torch.linalg.inv(eye + self.W.T @ self.W / self.s**2)

    def marginal(self) -> MultivariateNormal:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.D, dtype=torch.double)
        return MultivariateNormal(self.b, covariance_matrix=cov)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal().sample((n,))

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        return self.marginal().log_prob(x)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b) @ self.W @ self.S.T / self.s**2

    def set_encoder_to_diagonal_of_exact(self, widen: float = 1.0, shift: float = 0.0) -> None:
        """Encoder outputs the exact posterior mean (+ shift) and the exact marginal std per
        dim (x widen); widen > 1 gives a proposal with bounded importance weights."""
        enc = self.model.encoder.net[-1]
        d = self.d
        with torch.no_grad():
            enc.weight.zero_()
            enc.bias.zero_()
            # mean(x) = A (x - b), A = S W^T / s^2
            a = self.S @ self.W.T / self.s**2
            enc.weight[:d] = a
            enc.bias[:d] = -a @ self.b + shift
            std = widen * self.S.diagonal().sqrt()
            enc.bias[d:] = torch.log(torch.expm1(std - 1e-5))  # inverse of softplus + floor

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO of the model's current (diagonal) encoder.

        E_q log p(x|z) = -D/2 log(2 pi s^2) - (|x - W m - b|^2 + tr(W diag(v) W^T)) / (2 s^2).
        """
        q = self.model.encode(x)
        m, v = q.mean, q.variance
        resid = x - m @ self.W.T - self.b
        trace = (v * (self.W**2).sum(0)).sum(-1)
        rec = -0.5 * self.D * torch.log(torch.tensor(2 * torch.pi * self.s**2,
                                                     dtype=torch.double))
        rec = rec - (resid.pow(2).sum(-1) + trace) / (2 * self.s**2)
        kl = 0.5 * (v.sum(-1) + m.pow(2).sum(-1) - self.d - v.log().sum(-1))
        return rec - kl
