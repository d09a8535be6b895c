"""Typed configuration: one dataclass per concern, a comment per field.

Configs come from a TOML file plus ``section.key=value`` overrides. Unknown keys fail
loudly with the closest valid key suggested; the resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says how to fix it."""


@dataclass
class DataConfig:
    name: str = "mnist"  # mnist, fashion-mnist, or a path to an .npz / IDX file
    train_split: str = "train"  # split to train on: "train", or "train+valid" (no validation then)
    valid_split: str = "valid"  # split for per-epoch validation; "" disables it
    test_split: str = "test"  # split reported at the end of training
    binarize: str = "dynamic"  # Bernoulli data: "dynamic" (fresh draw per use), "static", "none"
    binarize_seed: int = 0  # seed of the fixed binarization of evaluation (and static) data
    data_dir: str = ""  # a directory to look in first ("" = only the known places and the cache)
    train_limit: int = 0  # train on the first N points of train_split only (0 = all of it)


@dataclass
class ModelConfig:
    latent: str = "gaussian"  # q(z|x): gaussian (diagonal), gaussian-full, categorical, bernoulli
    latent_dim: int = 20  # number of latent variables
    num_classes: int = 10  # classes per variable (categorical latents)
    prior: str = "auto"  # normal, mixture, vamp; discrete: uniform, learned; auto
    prior_components: int = 10  # components of a mixture / vamp prior
    encoder: str = "mlp"  # mlp, conv, or your own "package.module:Class" (docs/own-model.md)
    decoder: str = "mlp"  # mlp, conv, or your own "package.module:Class"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword args of your encoder
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword args of your decoder
    hidden: list[int] = field(default_factory=lambda: [512])  # MLP hidden sizes; [] = linear map
    encoder_hidden: list[int] = field(default_factory=list)  # encoder's own sizes; [] = hidden
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv channels, stride-2 layers
    activation: str = "relu"  # relu, tanh, elu, softplus, gelu, silu
    likelihood: str = "bernoulli"  # bernoulli, gaussian, continuous-bernoulli, logistic-256, ...
    likelihood_std: float = 0.1  # std of a fixed-variance gaussian likelihood
    likelihood_variance: str = "fixed"  # gaussian: fixed, shared, pixel (learned), output
    latent_layers: list[int] = field(default_factory=list)  # hierarchical: layer sizes from
    # the bottom up, e.g. [64, 32]; [] or one entry = one layer (of latent_dim / that size)
    inference: str = "bottom-up"  # hierarchical q: bottom-up (IWAE paper) or top-down (LVAE)
    top_down: str = "ladder"  # top-down q: ladder (LVAE precision-weighted), residual (NVAE)
    layer_hidden: list[int] = field(default_factory=lambda: [256])  # MLPs between layers
    conditional: bool = False  # labels into encoder and decoder: q(z|x,y), p(x|z,y)
    label_classes: int = 0  # conditional: label values (0 = from the training labels)


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # elbo or iwae
    samples: int = 1  # K: Monte Carlo samples of z per datapoint
    kl: str = "auto"  # auto (analytic where registered, else Monte Carlo), analytic, mc,
    # or relaxed (the Concrete relaxation's own KL; gumbel-softmax / straight-through only)
    beta: float = 1.0  # weight of the KL term after warm-up
    warmup_epochs: float = 0.0  # linear KL warm-up from 0 to beta over this many epochs
    free_bits: float = 0.0  # minimum KL in nats per latent dimension (0 = off)
    free_bits_groups: int = 0  # >0: free_bits floors the KL of each of this many equal groups
    estimator: str = "auto"  # auto, pathwise, score-function, gumbel-softmax, straight-through
    baseline: str = "none"  # score-function baseline: none, moving-average, nvil, leave-one-out
    baseline_decay: float = 0.9  # moving-average / nvil: decay of the running mean of f
    baseline_hidden: int = 100  # nvil: hidden units of the MLP b(x)
    baseline_normalize: bool = False  # nvil: divide the signal by its running std
    temperature: float = 1.0  # relaxation temperature tau0 (discrete latents)
    temperature_min: float = 0.5  # floor of the annealed temperature
    temperature_rate: float = 0.0  # r in tau = max(tau_min, tau0 exp(-r step)); 0 = constant
    temperature_every: int = 1000  # update the temperature every N steps
    prior_temperature: float = 0.0  # kl=relaxed: the relaxed prior's temperature (0 = tau's)


@dataclass
class TrainConfig:
    epochs: int = 30  # passes over the training split
    batch_size: int = 128  # datapoints per optimisation step
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant, cosine, exponential
    lr_decay: float = 0.98  # per-epoch factor of the exponential schedule
    grad_clip: float = 0.0  # max gradient norm (0 = no clipping)
    seed: int = 0  # seeds parameters, data order, binarization and sampling
    max_bad_steps: int = 5  # stop after this many non-finite steps in a row
    time_limit_minutes: float = 0.0  # stop after the epoch that crosses this (0 = no limit)
    threads: int = 0  # torch intra-op threads (0 = all cores)
    progress: bool = True  # show a progress bar
    grad_variance_every: int = 0  # measure the gradient variance every N steps (0 = off)
    grad_variance_draws: int = 10  # gradient estimates per measurement (>= 2)
    snapshot_every: int = 0  # save q(z|x) means of a fixed test subset every N epochs (animation)
    snapshot_points: int = 1000  # test points in each posterior snapshot
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps (0 = epoch ends)
    keep_checkpoints: int = 3  # newest step-numbered checkpoints kept besides last.pt/best.pt
    precision: str = "float32"  # float32, or bf16 (networks autocast in training; eval fp32)
    compile: bool = False  # torch.compile the encoder and decoder for training
    fused: bool = True  # MLP Gaussian-Bernoulli VAE: its ELBO as one autograd node (fused_elbo.py)
    device: str = "auto"  # auto (CUDA when present, one GPU per rank), cpu, cuda
    init_from: str = ""  # start from this run folder's best model weights (fresh optimizer)
    inference: str = "amortized"  # q(z|x): amortized, semi-amortized, mean-field (train_modes.py)
    refine_steps: int = 5  # semi-amortized: SGD steps on the encoder's output per training step
    refine_lr: float = 0.01  # semi-amortized: step size of those SGD steps
    refine_clip: float = 0.0  # semi-amortized: clip each datapoint's gradient norm (0 = off)
    refine_through: bool = False  # semi-amortized: backpropagate through the steps to the encoder
    mean_field_steps: int = 20  # mean-field: Adam steps on the batch's lambdas per step (E-step)
    mean_field_lr: float = 0.05  # mean-field: E-step learning rate (cosine-annealed to 1/20)
    mean_field_max: int = 10000  # mean-field: largest training set (one lambda per datapoint)


@dataclass
class EvalConfig:
    iw_samples: int = 1000  # K of the importance-sampled log-likelihood at the end of training
    batch_size: int = 20  # datapoints per evaluation chunk
    sample_chunk: int = 250  # importance samples per datapoint decoded at once; with batch_size
    #                          this bounds memory (20 x 250 x 784 floats = 16 MB, cache-sized)
    active_threshold: float = 0.01  # a unit is active when Cov_x(E_q[z_d]) exceeds this
    refine_steps: int = 500  # mean-field runs: BBVI steps from the prior giving q for eval data


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(tomli_w.dumps(self.to_dict()))


def _section_types(section: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(section))


def _check_value(section_name: str, key: str, value: Any, hint: Any) -> Any:
    """Coerce a parsed value to the field's declared type, or say what was expected."""
    origin = typing.get_origin(hint)
    where = f"{section_name}.{key}"
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list like [512, 256], got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(section_name, key, v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table like {{channels = 32}}, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in config")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(options)}"


def apply_dict(config: Config, values: dict[str, Any], origin: str = "config") -> Config:
    """Apply nested ``{section: {key: value}}`` values onto ``config`` with type checks."""
    sections = [f.name for f in dataclasses.fields(config)]
    for section_name, entries in values.items():
        if section_name not in sections:
            raise ConfigError(f"unknown section '{section_name}' in {origin}"
                              + _suggest(section_name, sections))
        if not isinstance(entries, dict):
            raise ConfigError(f"'{section_name}' in {origin} must be a table of keys")
        section = getattr(config, section_name)
        hints = _section_types(section)
        for key, value in entries.items():
            if key not in hints:
                full = [f"{section_name}.{k}" for k in hints]
                all_keys = [f"{s}.{k}" for s in sections
                            for k in _section_types(getattr(config, s))]
                raise ConfigError(f"unknown key '{section_name}.{key}' in {origin}"
                                  + _suggest(f"{section_name}.{key}", all_keys or full))
            setattr(section, key, _check_value(section_name, key, value, hints[key]))
    return config


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``section.key=value`` into ``{section: {key: value}}``; values are TOML literals."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, "
                          "e.g. train.epochs=5")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key '{dotted}' must be section.key, e.g. model.latent_dim")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as  model.latent=categorical
    return {parts[0]: {parts[1]: value}}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file at ``path``, then each ``section.key=value`` override."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass an existing .toml file "
                              "(examples in configs/)")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
        apply_dict(config, values, origin=str(path))
    for text in overrides or []:
        apply_dict(config, parse_override(text), origin=f"--set {text}")
    return config


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config saved with a run."""
    return apply_dict(Config(), values, origin="saved config")
