"""The one place where config strings become objects: model, objective, data checks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaelab.config import ConfigError, ModelConfig, ObjectiveConfig
from vaelab.estimators import ESTIMATORS
from vaelab.latents import FAMILIES, LatentFamily
from vaelab.likelihoods import BernoulliLikelihood, Likelihood, build_likelihood
from vaelab.model import VAE
from vaelab.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vaelab.objectives import OBJECTIVES, ObjectiveOutput
from vaelab.priors import MixtureOfGaussians, StandardNormal
from vaelab.train import Progress


def _choice(value: str, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}='{value}' is not known; choose one of {', '.join(options)}")


def build_posterior(cfg: ModelConfig) -> LatentFamily:
    _choice(cfg.latent, FAMILIES, "model.latent")
    if cfg.latent_dim < 1:
        raise ConfigError(f"model.latent_dim must be at least 1, got {cfg.latent_dim}")
    return FAMILIES[cfg.latent](cfg.latent_dim)


def build_prior(cfg: ModelConfig, posterior: LatentFamily) -> nn.Module:
    name = "normal" if cfg.prior == "auto" else cfg.prior
    priors = {"normal": lambda: StandardNormal(cfg.latent_dim),
              "mixture": lambda: MixtureOfGaussians(cfg.latent_dim, cfg.prior_components)}
    _choice(name, priors, "model.prior")
    return priors[name]()


def build_networks(cfg: ModelConfig, event_shape: tuple[int, ...], posterior: LatentFamily,
                   likelihood: Likelihood) -> tuple[nn.Module, nn.Module]:
    _choice(cfg.encoder, ("mlp", "conv"), "model.encoder")
    _choice(cfg.decoder, ("mlp", "conv"), "model.decoder")
    k = likelihood.params_per_element
    try:
        if cfg.encoder == "mlp":
            encoder = MLPEncoder(event_shape, cfg.hidden, posterior.param_size, cfg.activation)
        else:
            encoder = ConvEncoder(event_shape, cfg.channels, posterior.param_size,
                                  cfg.activation, hidden=cfg.hidden)
        if cfg.decoder == "mlp":
            decoder = MLPDecoder(posterior.flat_dim, cfg.hidden[::-1], event_shape, k,
                                 cfg.activation)
        else:
            decoder = ConvDecoder(posterior.flat_dim, cfg.channels, event_shape, k,
                                  cfg.activation, hidden=cfg.hidden[::-1])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return encoder, decoder


def init_output_bias(decoder: nn.Module, likelihood: Likelihood, data_mean: torch.Tensor) -> None:
    """Start the decoder at the data mean: logit(mean) for Bernoulli, the mean for Gaussian.

    This removes the first epochs' work of learning the average image.
    """
    layer = getattr(decoder, "output_layer", None)
    if layer is None or getattr(layer, "bias", None) is None:
        return
    mean = data_mean.clamp(1e-3, 1 - 1e-3) if isinstance(likelihood, BernoulliLikelihood) \
        else data_mean
    target = torch.logit(mean) if isinstance(likelihood, BernoulliLikelihood) else mean
    bias = layer.bias
    with torch.no_grad():
        if bias.numel() == target.numel() * likelihood.params_per_element:
            bias.view(likelihood.params_per_element, -1)[0].copy_(target.flatten())
        elif bias.numel() == likelihood.params_per_element * target.shape[0]:  # conv channels
            bias.view(likelihood.params_per_element, -1)[0].copy_(
                target.flatten(1).mean(1))


def build_model(cfg: ModelConfig, event_shape: tuple[int, ...],
                data_mean: torch.Tensor | None = None) -> VAE:
    """A VAE for data of ``event_shape``; ``data_mean`` (event_shape) initialises the output."""
    _choice(cfg.likelihood, LIKELIHOODS_ALL, "model.likelihood")
    posterior = build_posterior(cfg)
    prior = build_prior(cfg, posterior)
    try:
        likelihood = build_likelihood(cfg.likelihood, event_shape,
                                      variance=cfg.likelihood_variance, std=cfg.likelihood_std)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    encoder, decoder = build_networks(cfg, event_shape, posterior, likelihood)
    if data_mean is not None:
        init_output_bias(decoder, likelihood, data_mean)
    return VAE(encoder, posterior, prior, decoder, likelihood)


LIKELIHOODS_ALL = ["bernoulli", "gaussian"]

Objective = Callable[[VAE, torch.Tensor, Progress], ObjectiveOutput]


def kl_weight(cfg: ObjectiveConfig, progress: Progress) -> float:
    """beta, linearly warmed up from 0 over ``warmup_epochs``."""
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, progress.epoch / cfg.warmup_epochs)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """``objective(model, x, progress) -> ObjectiveOutput``."""
    _choice(cfg.name, OBJECTIVES, "objective.name")
    _choice(cfg.kl, ("auto", "analytic", "mc"), "objective.kl")
    if cfg.samples < 1:
        raise ConfigError(f"objective.samples must be at least 1, got {cfg.samples}")
    estimator_name = "pathwise" if cfg.estimator == "auto" else cfg.estimator
    _choice(estimator_name, ESTIMATORS, "objective.estimator")
    estimator = ESTIMATORS[estimator_name]()
    fn = OBJECTIVES[cfg.name]

    def objective(model: VAE, x: torch.Tensor, progress: Progress) -> ObjectiveOutput:
        return fn(model, x, samples=cfg.samples, kl=cfg.kl,
                  beta=kl_weight(cfg, progress), free_bits=cfg.free_bits,
                  estimator=estimator)

    return objective


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
