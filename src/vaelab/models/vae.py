"""The VAE: prior p(z), decoder p(x|z) and an inference network q(z|x). No loss lives here.

Every method returns ``torch.distributions`` objects or tensors, so objectives, estimators
and evaluation work for any combination of latent family, prior and likelihood.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.models.latents import LatentFamily
from vaelab.models.likelihoods import Likelihood


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z), with amortized inference q(z|x) = family(encoder(x))."""

    def __init__(self, encoder: nn.Module, posterior: LatentFamily, prior: nn.Module,
                 decoder: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.encoder = encoder
        self.posterior = posterior
        self.prior_module = prior
        self.decoder = decoder
        self.likelihood = likelihood

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.posterior.latent_shape

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    def prior(self) -> Distribution:
        """p(z), batch shape ()."""
        return self.prior_module()

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for x of shape (B, *event_shape); batch shape (B,). Use ``.mean`` for the
        posterior mean, ``.mode`` for the most likely code, ``.sample()`` for a draw."""
        return self.posterior(self.encoder(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z of shape (*batch, *latent_shape); batch shape ``batch``.

        The decoder sees z flattened to (N, D) and returns (N, k, *event_shape), or
        (N, *event_shape) when k = 1 (the contract of models/custom.py)."""
        flat = self.posterior.flatten(z)
        batch = flat.shape[:-1]
        out = self.decoder(flat.reshape(-1, flat.shape[-1]))  # (N, k, *event) or (N, *event)
        if out.dim() == 1 + len(self.event_shape):  # k = 1 left out
            out = out.unsqueeze(1)
        return self.likelihood(out.reshape(*batch, *out.shape[1:]))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z)) for z of shape (K, B, *latent): each (K, B)."""
        return self.decode(z).log_prob(x), self.prior().log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x) via z ~ p(z); ``mean=True`` returns E[x|z] (what one plots)."""
        px = self.decode(self.prior().sample((n,)))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mode of q(z|x)]: the deterministic reconstruction."""
        return self.decode(self.encode(x).mode).mean
