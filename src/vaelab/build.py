"""The one place where config strings become objects, and where a config is checked.

``validate(config)`` is every check a config can fail without data: each field against its
declared valid values (``config.check_fields``), then the rules between fields, found by
building the parts that need no data (the q(z|x) family, the prior's kind, the objective with
its estimator, baseline and temperature schedule, the inference mode). ``fit`` and every
command call it before loading data or writing a file.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable
from typing import cast

import torch
from torch import nn
from torch.distributions import Independent

from vaelab import rng
from vaelab.config import (
    BaselineName,
    Config,
    ConfigError,
    KLName,
    ModelConfig,
    ObjectiveConfig,
    check_fields,
    check_section,
)
from vaelab.data.errors import DataError
from vaelab.data.rows import Rows
from vaelab.data.splits import check_fractions
from vaelab.inference.baselines import build_baseline
from vaelab.inference.estimators import (
    ESTIMATORS,
    Estimator,
    GumbelSoftmax,
    Pathwise,
    ScoreFunction,
)
from vaelab.inference.fused_elbo import (
    FusedPlan,
    fused_applies,
    fused_gaussian_bernoulli_elbo,
    fused_plan,
)
from vaelab.inference.fused_iwae import fused_gaussian_bernoulli_iwae
from vaelab.inference.fused_layered import LayeredPlan, fused_layered, layered_plan
from vaelab.inference.layered import LAYERED_OBJECTIVES
from vaelab.inference.objectives import OBJECTIVES, ObjectiveOutput
from vaelab.models.custom import (
    ContractError,
    check_networks,
    import_module_path,
    is_import_path,
)
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.latents import FAMILIES, MIN_SCALE, DiagonalGaussian, LatentFamily
from vaelab.models.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    Likelihood,
    build_likelihood,
)
from vaelab.models.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vaelab.models.priors import (
    BernoulliPrior,
    CategoricalPrior,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
)
from vaelab.models.vae import VAE
from vaelab.schedules import Progress, TemperatureSchedule, kl_weight


def validate(config: Config) -> Config:
    """Raise ConfigError (one line: the key(s), the value(s), what to do) unless every field
    is within its declared range and the fields fit together; returns ``config``.

    Needs no data and writes nothing, so it runs first (``fit``, the CLI); the checks that
    need the data (its shape and value range, the split sizes) or the processes (world size,
    CUDA) are made where those are known, still before any file is written.
    """
    check_fields(config, on_disk=True)
    try:
        check_fractions(config.data.split_fractions)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    m = config.model
    # model.label_classes=0 is read from the training labels later (api.fit)
    if len(check_latent_layers(dataclasses.replace(m, label_classes=m.label_classes or 2))) > 1:
        check_layered_objective(config.objective, m.inference,
                                resolve_estimator(config.objective, discrete=False))
    posterior = build_posterior(m)
    check_prior_fits_posterior(m, resolve_prior(m, posterior), posterior)
    if m.likelihood == "gaussian" and m.likelihood_variance in ("shared", "pixel") \
            and m.likelihood_std <= 2 * MIN_SCALE:
        raise ConfigError(f"model.likelihood_std={m.likelihood_std:g} with a learned "
                          f"variance ({m.likelihood_variance}) must exceed {2 * MIN_SCALE:g}, "
                          "the scale floor; raise it (the learned std starts there)")
    if "conv" in (m.encoder, m.decoder) and not m.channels:
        raise ConfigError("model.channels=[]: a conv encoder or decoder needs at least one "
                          "layer, e.g. model.channels=[32, 64]")
    if m.residual_blocks and "conv" not in (m.encoder, m.decoder):
        raise ConfigError(f"model.residual_blocks={m.residual_blocks} adds residual blocks to "
                          "conv networks, but model.encoder and model.decoder are not conv; "
                          "set model.encoder=conv / model.decoder=conv, or "
                          "model.residual_blocks=0")
    build_objective(config.objective, event_shape=(1,), discrete=posterior.discrete,
                    fused=False)
    check_estimator_family(config.objective, posterior)
    from vaelab.inference.modes import check_mode  # the mode's own rules, data size aside

    check_mode(config, n_train=0)
    return config


def build_posterior(cfg: ModelConfig) -> LatentFamily:
    check_section(cfg, "model")
    if cfg.latent == "categorical":
        return FAMILIES[cfg.latent](cfg.latent_dim, cfg.num_classes)
    return FAMILIES[cfg.latent](cfg.latent_dim)


def _discrete_prior(cfg: ModelConfig, posterior: LatentFamily, learned: bool) -> nn.Module:
    """Uniform (or learned-logits) prior matching a categorical or Bernoulli posterior."""
    if len(posterior.latent_shape) == 2:
        return CategoricalPrior(cfg.latent_dim, cfg.num_classes, learned=learned)
    return BernoulliPrior(cfg.latent_dim, learned=learned)


GAUSSIAN_PRIORS = ("normal", "mixture", "vamp")  # priors over real-valued z


def check_prior_fits_posterior(cfg: ModelConfig, prior: str, posterior: LatentFamily) -> None:
    """Gaussian priors need a continuous (Gaussian) posterior; discrete priors a discrete one."""
    if prior in GAUSSIAN_PRIORS and posterior.discrete:
        raise ConfigError(f"model.prior={prior} is a prior over real-valued z but "
                          f"model.latent={cfg.latent} is discrete; use model.prior=auto")
    if prior not in GAUSSIAN_PRIORS and not posterior.discrete:
        raise ConfigError(f"model.prior={prior} is a prior over discrete codes but "
                          f"model.latent={cfg.latent} is continuous; use model.prior=normal, "
                          "mixture or vamp (or a discrete model.latent)")


def _vamp_init(k: int, event_shape: tuple[int, ...], data_mean: torch.Tensor | None,
               data_x: torch.Tensor | Rows | None) -> torch.Tensor:
    """K pseudo-inputs: random training points when given, else noise around the data mean."""
    if data_x is not None and data_x.shape[0] > 0:
        idx = torch.randperm(data_x.shape[0])[:k].repeat(k // data_x.shape[0] + 1)[:k]
        return data_x[idx].detach().clone().float()
    center = data_mean if data_mean is not None else torch.full(event_shape, 0.5)
    return center.expand(k, *event_shape) + 0.05 * torch.randn(k, *event_shape)


def resolve_prior(cfg: ModelConfig, posterior: LatentFamily) -> str:
    """model.prior with auto resolved: normal for real-valued z, uniform for discrete z."""
    if cfg.prior != "auto":
        return cfg.prior
    return "uniform" if posterior.discrete else "normal"


def build_prior(cfg: ModelConfig, posterior: LatentFamily, encoder: nn.Module | None = None,
                event_shape: tuple[int, ...] = (), data_mean: torch.Tensor | None = None,
                data_x: torch.Tensor | Rows | None = None) -> nn.Module:
    """p(z); the vamp prior needs the encoder (built first) and the data's event shape."""
    name = resolve_prior(cfg, posterior)
    priors = {"normal": lambda: StandardNormal(cfg.latent_dim),
              "mixture": lambda: MixtureOfGaussians(cfg.latent_dim, cfg.prior_components),
              # encoder=None is refused below, before any prior is built
              "vamp": lambda: VampPrior(cast(nn.Module, encoder), posterior, _vamp_init(
                  cfg.prior_components, event_shape, data_mean, data_x)),
              "uniform": lambda: _discrete_prior(cfg, posterior, learned=False),
              "learned": lambda: _discrete_prior(cfg, posterior, learned=True)}
    check_prior_fits_posterior(cfg, name, posterior)
    if name == "vamp" and encoder is None:
        raise ValueError("the vamp prior is built from the encoder: pass encoder= to build_prior")
    return priors[name]()


GIVEN = "python"  # model.encoder/decoder of a run whose module was passed to fit()
BUILT_IN_NETWORKS = ("mlp", "conv")


def _network(key: str, name: str, kwargs: dict, given: nn.Module | None,
             built_in: Callable[[], nn.Module]) -> nn.Module:
    """A given module, one imported by path (``pkg.mod:Class`` with kwargs), or built-in."""
    if given is not None:
        if not isinstance(given, nn.Module):
            raise ConfigError(f"{key.split('.')[1]}= must be a torch.nn.Module, got "
                              f"{type(given).__name__}")
        return given
    if name == GIVEN:
        what = key.split(".")[1]
        raise ConfigError(f"{key}={GIVEN}: the run's {what} was passed to fit() from Python; "
                          f"pass it again (fit(..., {what}=...), load_run(path, {what}=...)), "
                          f"or set {key}='package.module:Class'")
    if is_import_path(name):
        try:
            return import_module_path(name, kwargs, key)
        except ContractError as err:
            raise ConfigError(str(err)) from None
    if name not in BUILT_IN_NETWORKS:  # config.NetworkName admits these and import paths
        raise ConfigError(f"{key}={name!r}: must be mlp, conv, or 'package.module:Class'")
    if kwargs:
        raise ConfigError(f"{key}_kwargs={kwargs} are for your own module; the built-in "
                          f"{key}={name} is set by model.hidden/channels/activation")
    return built_in()


def build_networks(cfg: ModelConfig, event_shape: tuple[int, ...], posterior: LatentFamily,
                   likelihood: Likelihood, encoder: nn.Module | None = None,
                   decoder: nn.Module | None = None) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder: ``encoder``/``decoder`` when given, else by config."""
    k = likelihood.params_per_element
    enc_hidden = cfg.encoder_hidden or cfg.hidden  # a larger encoder: the amortization gap

    def builtin_encoder() -> nn.Module:
        if cfg.encoder == "mlp":
            return MLPEncoder(event_shape, enc_hidden, posterior.param_size, cfg.activation)
        return ConvEncoder(event_shape, cfg.channels, posterior.param_size,
                           cfg.activation, hidden=enc_hidden, blocks=cfg.residual_blocks)

    def builtin_decoder() -> nn.Module:
        if cfg.decoder == "mlp":
            return MLPDecoder(posterior.flat_dim, cfg.hidden[::-1], event_shape, k,
                              cfg.activation)
        return ConvDecoder(posterior.flat_dim, cfg.channels, event_shape, k,
                           cfg.activation, hidden=cfg.hidden[::-1], blocks=cfg.residual_blocks)

    try:
        enc = _network("model.encoder", cfg.encoder, cfg.encoder_kwargs, encoder,
                       builtin_encoder)
        dec = _network("model.decoder", cfg.decoder, cfg.decoder_kwargs, decoder,
                       builtin_decoder)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return enc, dec


def init_output_bias(decoder: nn.Module, likelihood: Likelihood, data_mean: torch.Tensor) -> None:
    """Start the decoder at the data mean: logit(mean) for Bernoulli, the mean for Gaussian.

    This removes the first epochs' work of learning the average image.
    """
    layer = getattr(decoder, "output_layer", None)
    if layer is None or getattr(layer, "bias", None) is None:
        return
    logits = isinstance(likelihood, BernoulliLikelihood | ContinuousBernoulliLikelihood)
    mean = data_mean.clamp(1e-3, 1 - 1e-3) if logits else data_mean
    target = torch.logit(mean) if logits else mean
    bias = layer.bias
    with torch.no_grad():
        if bias.numel() == target.numel() * likelihood.params_per_element:
            bias.view(likelihood.params_per_element, -1)[0].copy_(target.flatten())
        elif bias.numel() == likelihood.params_per_element * target.shape[0]:  # conv channels
            bias.view(likelihood.params_per_element, -1)[0].copy_(
                target.flatten(1).mean(1))


def build_model(cfg: ModelConfig, event_shape: tuple[int, ...],
                data_mean: torch.Tensor | None = None,
                data_x: torch.Tensor | Rows | None = None, *, encoder: nn.Module | None = None,
                decoder: nn.Module | None = None) -> VAE:
    """A VAE for data of ``event_shape``; ``data_mean`` (event_shape) initialises the output,
    ``data_x`` (N, *event_shape; a tensor or a data/rows.py store) the vamp prior's
    pseudo-inputs (K random rows). With several ``model.latent_layers`` a
    :class:`HierarchicalVAE`; one entry is today's VAE.
    ``encoder``/``decoder``: your own modules instead of model.encoder/decoder; every pair
    is checked with one dry batch against the latent family and likelihood (custom.py)."""
    layers = check_latent_layers(cfg)
    if len(layers) > 1 or cfg.conditional:
        if encoder is not None or decoder is not None:
            raise ConfigError("encoder=/decoder= replace the networks of one latent layer; "
                              f"model.latent_layers={layers} / model.conditional build their own")
        # cast: HierarchicalVAE is no VAE subclass but offers the interface callers use
        # (encode, decode, prior, latent_shape, ...); a shared Protocol would say so exactly
        return cast(VAE, build_hierarchical(cfg, event_shape, data_mean))
    if layers:
        cfg = dataclasses.replace(cfg, latent_dim=layers[0], latent_layers=[])
    posterior = build_posterior(cfg)  # checks the section
    try:
        likelihood = build_likelihood(cfg.likelihood, event_shape,
                                      variance=cfg.likelihood_variance, std=cfg.likelihood_std)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    encoder, decoder = build_networks(cfg, event_shape, posterior, likelihood, encoder, decoder)
    try:
        check_networks(encoder, decoder, posterior, likelihood, latent=cfg.latent,
                       likelihood_name=cfg.likelihood)
    except ContractError as err:
        raise ConfigError(str(err)) from None
    prior = build_prior(cfg, posterior, encoder, tuple(event_shape), data_mean, data_x)
    if data_mean is not None:
        init_output_bias(decoder, likelihood, data_mean)
    return VAE(encoder, posterior, prior, decoder, likelihood)


def check_latent_layers(cfg: ModelConfig) -> list[int]:
    """model.latent_layers, model.inference and model.top_down checked; the layer sizes."""
    check_section(cfg, "model")
    layers = list(cfg.latent_layers)
    discrete = FAMILIES[cfg.latent].discrete
    if cfg.inference == "top-down" and discrete:
        raise ConfigError(f"model.inference=top-down combines Gaussian conditionals, but "
                          f"model.latent={cfg.latent} is discrete; use model.latent=gaussian "
                          "or model.inference=bottom-up")
    if len(layers) > 1 and (cfg.latent != "gaussian" or cfg.prior not in ("auto", "normal")):
        raise ConfigError(f"model.latent_layers={layers} stacks diagonal Gaussian layers under "
                          f"a N(0, I) top; got model.latent={cfg.latent}, model.prior="
                          f"{cfg.prior}: use model.latent=gaussian and model.prior=auto")
    if cfg.conditional:
        if cfg.encoder != "mlp" or cfg.latent != "gaussian" or cfg.prior not in ("auto",
                                                                                  "normal"):
            raise ConfigError("model.conditional=true reads [x, one-hot y] with an MLP encoder "
                              "into Gaussian layers under N(0, I); use model.encoder=mlp, "
                              "model.latent=gaussian, model.prior=auto")
        if cfg.label_classes < 2:
            raise ConfigError(f"model.label_classes={cfg.label_classes}: a conditional model "
                              "needs at least 2 label values (0 = read them from the training "
                              "labels, which vaelab.fit does)")
    return layers


def build_hierarchical(cfg: ModelConfig, event_shape: tuple[int, ...],
                       data_mean: torch.Tensor | None = None) -> HierarchicalVAE:
    """The hierarchical VAE of ``model.latent_layers`` (models/hierarchical.py)."""
    sizes = list(cfg.latent_layers) or [cfg.latent_dim]
    classes = cfg.label_classes if cfg.conditional else 0
    try:
        likelihood = build_likelihood(cfg.likelihood, event_shape,
                                      variance=cfg.likelihood_variance, std=cfg.likelihood_std)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    bottom = DiagonalGaussian(sizes[0])  # the encoder outputs 2 d_1 numbers either way
    encoder, decoder = build_networks(cfg, event_shape, bottom, likelihood)
    if classes:  # conditional: the encoder reads [x, y] (D + C), the decoder [z_1, y]
        encoder = build_networks(cfg, (math.prod(event_shape) + classes,), bottom,
                                 likelihood)[0]
        decoder = build_networks(cfg, event_shape, DiagonalGaussian(sizes[0] + classes),
                                 likelihood)[1]
    if data_mean is not None:
        init_output_bias(decoder, likelihood, data_mean)
    try:
        return HierarchicalVAE(encoder, decoder, likelihood, sizes, inference=cfg.inference,
                               combine=cfg.top_down, hidden=cfg.layer_hidden,
                               act=cfg.activation, classes=classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


Objective = Callable[[VAE, torch.Tensor, Progress], ObjectiveOutput]


def resolve_estimator(cfg: ObjectiveConfig, discrete: bool = False) -> str:
    """objective.estimator with auto resolved: pathwise for Gaussian latents, gumbel-softmax
    (the relaxation of Jang et al. 2017) for discrete ones."""
    if cfg.estimator != "auto":
        return cfg.estimator
    return "gumbel-softmax" if discrete else "pathwise"


def temperature_schedule(cfg: ObjectiveConfig) -> TemperatureSchedule:
    """tau(step) of the relaxed estimators, from objective.temperature*."""
    try:
        return TemperatureSchedule(cfg.temperature, cfg.temperature_min, cfg.temperature_rate,
                                   cfg.temperature_every)
    except ValueError as err:
        raise ConfigError(f"objective.temperature_min/_rate/_every: {err}") from None


def evaluation_kl(cfg: ObjectiveConfig) -> KLName:
    """The KL mode for evaluating the model (validation, test): the discrete model's
    closed form when training used the relaxation's KL (``objective.kl=relaxed``)."""
    return "analytic" if cfg.kl == "relaxed" else cfg.kl


def check_relaxation(cfg: ObjectiveConfig, estimator: Estimator) -> None:
    """Relaxed samples are not values of the discrete q and p: their log-probabilities (a
    Monte Carlo KL, IWAE weights) would be wrong, so these estimators need the analytic KL."""
    if not isinstance(estimator, GumbelSoftmax):
        if cfg.kl == "relaxed":
            raise ConfigError(f"objective.kl=relaxed is the KL of the Concrete relaxation, "
                              f"which objective.estimator={estimator.name} does not train; "
                              "use estimator=gumbel-softmax or straight-through, or "
                              "objective.kl=auto")
        return
    if cfg.kl == "relaxed" and cfg.free_bits > 0:
        raise ConfigError("objective.free_bits needs the closed-form KL, not kl=relaxed; set "
                          "objective.free_bits=0 or objective.kl=analytic")
    if cfg.kl == "mc":
        raise ConfigError(f"objective.kl=mc with objective.estimator={estimator.name}: the "
                          "discrete log q(z|x) and log p(z) are not defined at relaxed samples; "
                          "use objective.kl=analytic (or auto), or estimator=score-function")
    if cfg.name != "elbo":
        raise ConfigError(f"objective.name={cfg.name} with objective.estimator={estimator.name}"
                          ": importance weights need log q(z|x) at relaxed samples; use "
                          "objective.name=elbo, or estimator=score-function")


def build_estimator(cfg: ObjectiveConfig, event_shape: tuple[int, ...] | None = None,
                    discrete: bool = False) -> Estimator:
    """The gradient estimator named by ``objective.estimator`` (with its baseline)."""
    check_section(cfg, "objective")
    estimator_name = resolve_estimator(cfg, discrete)
    if estimator_name == "score-function":
        return ScoreFunction(build_baseline(
            cfg.baseline, samples=cfg.samples, event_shape=event_shape,
            decay=cfg.baseline_decay, hidden=cfg.baseline_hidden,
            normalize=cfg.baseline_normalize))
    if cfg.baseline != "none":
        raise ConfigError(f"objective.baseline={cfg.baseline} is a control variate for the "
                          f"score-function estimator, not for {estimator_name}; set "
                          "objective.estimator=score-function or objective.baseline=none")
    return ESTIMATORS[estimator_name]()


def bbvi_estimator(family: LatentFamily, samples: int) -> Estimator:
    """The gradient estimator of black-box VI (Ranganath et al. 2014, inference/refine.py):
    pathwise for a reparameterizable q, else the score-function estimator with the
    leave-one-out baseline when it has K >= 2 samples to leave out (none with K = 1)."""
    if not family.discrete:
        return build_estimator(ObjectiveConfig(estimator="pathwise"))
    baseline: BaselineName = "leave-one-out" if samples > 1 else "none"
    return build_estimator(ObjectiveConfig(estimator="score-function", baseline=baseline,
                                           samples=samples))


def check_estimator(cfg: ObjectiveConfig, model: VAE) -> None:
    """Fail before training when the estimator cannot work with the model's q(z|x)."""
    estimator_name = resolve_estimator(cfg, model.posterior.discrete)
    if isinstance(model, HierarchicalVAE):
        check_layered_objective(cfg, model.inference, estimator_name)
    check_estimator_family(cfg, model.posterior)


def check_estimator_family(cfg: ObjectiveConfig, posterior: LatentFamily) -> None:
    """objective.estimator=pathwise needs a q(z|x) family with rsample."""
    estimator_name = resolve_estimator(cfg, posterior.discrete)
    if estimator_name != "pathwise":
        return
    with torch.no_grad():
        q = posterior(torch.zeros(1, posterior.param_size))
    if not q.has_rsample:
        others = [name for name in ESTIMATORS if name != "pathwise"]
        base = q
        while isinstance(base, Independent):
            base = base.base_dist
        raise ConfigError(f"objective.estimator=pathwise needs a reparameterizable q(z|x), but "
                          f"model.latent's q(z|x) ({type(posterior).__name__}: "
                          f"{type(base).__name__}) has no rsample; set objective.estimator "
                          f"to one of {', '.join(others)}")


def check_layered_objective(cfg: ObjectiveConfig, inference: str, estimator_name: str) -> None:
    """What a hierarchical model can train with: pathwise gradients, and a closed-form KL
    only where every layer has one (top-down)."""
    if estimator_name != "pathwise":
        raise ConfigError(f"objective.estimator={estimator_name}: hierarchical models "
                          "(model.latent_layers) train with pathwise gradients through their "
                          "Gaussian layers; set objective.estimator=auto")
    if cfg.kl not in ("auto", "analytic", "mc"):
        raise ConfigError(f"objective.kl={cfg.kl} does not apply to a hierarchical model; use "
                          "objective.kl=auto, analytic or mc")
    if cfg.kl == "analytic" and inference == "bottom-up":
        raise ConfigError("objective.kl=analytic with model.inference=bottom-up: p(z_l|z_{l+1}) "
                          "reads a draw made after z_l, so the lower layers' KL has no closed "
                          "form; use objective.kl=auto (closed form on top, Monte Carlo below)")


class ConfiguredObjective(nn.Module):
    """``objective(model, x, progress) -> ObjectiveOutput`` for one config.

    A module so that whatever the estimator trains besides the model (a baseline's network
    and running statistics) is optimised and checkpointed with it.
    """

    def __init__(self, cfg: ObjectiveConfig, estimator: Estimator, fused: bool = True):
        super().__init__()
        self.cfg = cfg
        self.fn = OBJECTIVES[cfg.name]
        self.estimator = estimator  # registered as a submodule when it is an nn.Module
        self.temperature = temperature_schedule(cfg)  # tau(step) for relaxed estimators
        # the one-node ELBO of the MLP Gaussian-Bernoulli VAE (inference/fused_elbo.py), where
        # it applies (train.fused = ``fused``), and the one-node IWAE bound of the same model
        # (inference/fused_iwae.py); their run-time conditions are checked at each call
        elbo_fusable = (cfg.name == "elbo" and cfg.samples == 1
                        and cfg.kl in ("auto", "analytic") and cfg.free_bits == 0)
        self.fused = (fused and (elbo_fusable or cfg.name == "iwae")
                      and type(estimator) is Pathwise)
        # hierarchies: networks fused, no distribution objects (inference/fused_layered.py)
        self.fused_layers = (fused and cfg.name in ("elbo", "iwae")
                             and type(estimator) is Pathwise)
        self._plans: weakref.WeakKeyDictionary[VAE, FusedPlan | LayeredPlan | None] = \
            weakref.WeakKeyDictionary()  # each model's, found at its first step

    @property
    def relaxed(self) -> bool:
        """Training draws relaxed samples (gumbel-softmax, straight-through) at a temperature."""
        return isinstance(self.estimator, GumbelSoftmax)

    def forward(self, model: VAE, x: torch.Tensor, progress: Progress) -> ObjectiveOutput:
        cfg = self.cfg
        if isinstance(self.estimator, GumbelSoftmax):
            self.estimator.temperature = self.temperature.at(progress.step)
            self.estimator.prior_temperature = cfg.prior_temperature
        if isinstance(model, HierarchicalVAE):  # sums over the layers of the joint latent
            kwargs = dict(samples=cfg.samples, kl=cfg.kl, beta=kl_weight(cfg, progress),
                          free_bits=cfg.free_bits, free_bits_groups=cfg.free_bits_groups)
            if self.fused_layers and fused_applies(x):
                if model not in self._plans:
                    self._plans[model] = layered_plan(model)
                layers = self._plans[model]
                if isinstance(layers, LayeredPlan):
                    return fused_layered(layers, model, x, cfg.name, **kwargs)
            return LAYERED_OBJECTIVES[cfg.name](model, x, estimator=self.estimator, **kwargs)
        if self.fused and fused_applies(x):
            if model not in self._plans:
                self._plans[model] = fused_plan(model)
            plan = self._plans[model]
            assert not isinstance(plan, LayeredPlan)  # a VAE's plan
            if plan is not None and cfg.name == "iwae":
                return self._fused_iwae(plan, x, kl_weight(cfg, progress), cfg.samples)
            if plan is not None:
                return self._fused_elbo(plan, x, kl_weight(cfg, progress))
        return self.fn(model, x, samples=cfg.samples, kl=cfg.kl,
                       beta=kl_weight(cfg, progress), free_bits=cfg.free_bits,
                       free_bits_groups=cfg.free_bits_groups, estimator=self.estimator)

    def trains_fused(self, model: VAE) -> bool:
        """Whether the training steps so far ran ``model`` through the fused ELBO."""
        fused = self.fused_layers if isinstance(model, HierarchicalVAE) else self.fused
        return fused and self._plans.get(model) is not None

    @staticmethod
    def _fused_elbo(plan: FusedPlan, x: torch.Tensor, beta: float) -> ObjectiveOutput:
        eps = rng.standard_normal(x.shape[0], plan.latent_dim, x.device)  # Pathwise's draw
        loss, rec, kl = fused_gaussian_bernoulli_elbo(plan, x, eps, beta)
        return ObjectiveOutput(loss=loss, bound=rec - kl, rec=rec, kl=kl)

    @staticmethod
    def _fused_iwae(plan: FusedPlan, x: torch.Tensor, beta: float, k: int) -> ObjectiveOutput:
        eps = rng.standard_normal(x.shape[0], plan.latent_dim, x.device, samples=k)
        loss, bound, rec, kl = fused_gaussian_bernoulli_iwae(plan, x, eps, beta)
        return ObjectiveOutput(loss=loss, bound=bound, rec=rec, kl=kl)


def build_objective(cfg: ObjectiveConfig, event_shape: tuple[int, ...] | None = None,
                    discrete: bool = False, fused: bool = True) -> ConfiguredObjective:
    """``objective(model, x, progress) -> ObjectiveOutput``; ``event_shape`` (the data's)
    is needed only by the nvil baseline, whose network reads x; ``discrete`` (the latent
    family's) picks the estimator for objective.estimator=auto; ``fused`` (train.fused)
    allows the fused ELBO where it applies."""
    check_section(cfg, "objective")
    if cfg.free_bits > 0 and cfg.name != "elbo":
        raise ConfigError(f"objective.free_bits applies to the KL term of the elbo, which "
                          f"objective.name={cfg.name} has not; set objective.free_bits=0")
    estimator = build_estimator(cfg, event_shape, discrete)
    check_relaxation(cfg, estimator)
    return ConfiguredObjective(cfg, estimator, fused)


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
