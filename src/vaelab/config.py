"""Typed configuration: one dataclass per concern, a comment per field.

Configs come from a TOML file plus ``section.key=value`` overrides. Unknown keys fail
loudly with the closest valid key suggested; the resolved config is saved with every run.

Every field declares its valid values in its type: ``Literal[...]`` for a choice, ``bool``,
or ``Annotated[int | float | str, rule]`` with a :class:`Range` or :class:`Text` rule (the
aliases below name the common ones; lists check each item). :func:`check_fields` checks
every field against its declaration and names the key, the value and the valid range in
one line; ``load_config`` calls it, and ``build.validate`` adds the rules between fields.
A field without a declaration fails the table-driven test (tests/test_validation.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says how to fix it."""


# ---- declared valid values ---------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """Valid numbers of a field: bounds ``ge``/``gt`` below and ``le``/``lt`` above (None =
    unbounded); the value must also be finite (nan and inf never are valid)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def ok(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.ge is None or value >= self.ge)
                and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le)
                and (self.lt is None or value < self.lt))

    def text(self) -> str:
        lo = (f"[{self.ge:g}" if self.ge is not None else
              f"({self.gt:g}" if self.gt is not None else None)
        hi = (f"{self.le:g}]" if self.le is not None else
              f"{self.lt:g})" if self.lt is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}"
        if hi:
            return f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}"
        return "finite"

    def examples(self, integer: bool) -> list[Any]:
        """Invalid values just outside the range (for tests and the docs)."""
        step = 1 if integer else 1e-3
        out: list[Any] = []
        if self.ge is not None:
            out.append(type_(integer)(self.ge - step))
        if self.gt is not None:
            out.append(type_(integer)(self.gt))
        if self.le is not None:
            out.append(type_(integer)(self.le + step))
        if self.lt is not None:
            out.append(type_(integer)(self.lt))
        if not integer:
            out.append(math.nan)
        return out


def type_(integer: bool) -> Callable[[float], Any]:
    return (lambda v: int(v)) if integer else float


@dataclass(frozen=True)
class Text:
    """Valid strings of a free-form field: a predicate, what it means, invalid examples.

    ``on_disk`` rules look at the file system (a folder that must exist): they are checked
    when the config is used (``build.validate``), not when it is loaded, since a config may
    name a run that an earlier step will make.
    """

    meaning: str
    ok: Callable[[str], bool]
    invalid: tuple[str, ...]
    on_disk: bool = False


# the common declarations, by name
Count = Annotated[int, Range(ge=1)]  # 1, 2, ...
Natural = Annotated[int, Range(ge=0)]  # 0, 1, 2, ... (0 is usually "off" or "all")
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Seed = Annotated[int, Range(ge=0, lt=2**63)]
Share = Annotated[float, Range(ge=0, le=1)]  # a fraction of a whole, 0 to 1

_SPLIT = re.compile(r"^[A-Za-z0-9_+-]+$")


def _split_name(required: bool) -> Text:
    return Text(("a split name" if required else "'' or a split name")
                + " (letters, digits, _ + -)",
                lambda s: bool(_SPLIT.match(s)) or (not required and s == ""),
                ("", "no such split!") if required else ("no such split!",))


def _is_dir_or_empty(s: str) -> bool:
    return s == "" or Path(s).expanduser().is_dir()


def _is_run_or_empty(s: str) -> bool:
    return s == "" or (Path(s) / "config.toml").is_file()


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# a built-in network, "python" (a run whose module was passed to fit()), or an import path
NetworkName = Annotated[str, Text(
    "mlp, conv, or your own module as 'package.module:Class'",
    lambda s: s in ("mlp", "conv", "python") or bool(_IMPORT_PATH.match(s)),
    ("transformer", "my module:Class"))]
Kwargs = Annotated[dict[str, Any], Text("a table of keyword arguments, e.g. {width = 64}",
                                        lambda d: True, ())]
SplitName = Annotated[str, _split_name(required=True)]
OptionalSplit = Annotated[str, _split_name(required=False)]
TrackingURI = Annotated[str, Text("'' or a URI with a scheme (file:/..., http://...)",
                                   lambda s: s == "" or "://" in s or s.startswith("file:"),
                                   ("mlruns", "localhost"))]
DatasetName = Annotated[str, Text("a dataset name (mnist, fashion-mnist, cifar10) or a path",
                                  lambda s: s.strip() != "", ("", "  "))]
Directory = Annotated[str, Text("'' or an existing directory", _is_dir_or_empty,
                                ("no/such/directory",), on_disk=True)]
ColumnName = Annotated[str, Text("'' or a column name (no spaces around it)",
                                 lambda s: s == s.strip() and "\n" not in s, (" y", "y "))]
RunFolder = Annotated[str, Text("'' or a vaelab run folder (a directory with config.toml)",
                                _is_run_or_empty, ("no/such/run",), on_disk=True)]

# names of the choices (the registries in models/, inference/ are checked against them)
LatentName = Literal["gaussian", "gaussian-full", "categorical", "bernoulli"]
PriorName = Literal["auto", "normal", "mixture", "vamp", "uniform", "learned"]
ActivationName = Literal["relu", "tanh", "elu", "softplus", "gelu", "silu"]
LikelihoodName = Literal["bernoulli", "gaussian", "continuous-bernoulli", "logistic-256"]
VarianceName = Literal["fixed", "shared", "pixel", "output"]
ObjectiveName = Literal["elbo", "iwae"]
KLName = Literal["auto", "analytic", "mc", "relaxed"]
EstimatorName = Literal["auto", "pathwise", "score-function", "gumbel-softmax",
                        "straight-through"]
BaselineName = Literal["none", "moving-average", "nvil", "leave-one-out"]
InferenceName = Literal["amortized", "semi-amortized", "mean-field"]


@dataclass
class DataConfig:
    # mnist, fashion-mnist, cifar10, or a path: .npz, .npy (a file or a folder of them), IDX,
    # an image folder, a .csv/.parquet table; "python" = data passed to vaelab.fit(data=...)
    name: DatasetName = "mnist"
    train_split: SplitName = "train"  # split to train on: "train", or "train+valid"
    valid_split: OptionalSplit = "valid"  # split for per-epoch validation; "" disables it
    test_split: OptionalSplit = "test"  # split reported at the end of training; "" = none
    # Bernoulli data: "dynamic" (fresh draw per use), "static", "none"
    binarize: Literal["dynamic", "static", "none"] = "dynamic"
    binarize_seed: Seed = 0  # seed of the fixed binarization of evaluation (and static) data
    data_dir: Directory = ""  # a directory to look in first ("" = the known places, cache)
    train_limit: Natural = 0  # train on the first N points of train_split only (0 = all)
    # a file of one array (no splits of its own): train, valid, test shares of a seeded split
    split_fractions: list[Share] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: Seed = 0  # seed of that split's permutation of the rows
    image_size: Natural = 0  # image folders: make every image N x N pixels (0 = keep the
    # one size all files must share)
    image_fit: Literal["resize", "center-crop"] = "resize"  # image_size > 0: resize (stretch
    # to N x N) or center-crop (short side to N, the centre cut out)
    image_channels: Literal["auto", "gray", "rgb"] = "auto"  # image folders: auto (as the
    # files are; all must agree), gray or rgb (convert every file)
    label_column: ColumnName = ""  # tables: the column of labels, not data ("" = no labels)
    standardize: bool = True  # tables: subtract the training split's column means, divide
    # by its stds (undone in Run.sample)
    storage: Literal["auto", "memory", "float32"] = "auto"  # training rows: auto (8-bit data
    # as uint8, .npy files memory-mapped), memory (in RAM, 8-bit as uint8), float32 (4x uint8)


@dataclass
class ModelConfig:
    latent: LatentName = "gaussian"  # q(z|x): gaussian (diagonal), gaussian-full, ...
    latent_dim: Count = 20  # number of latent variables (>= 1)
    num_classes: Annotated[int, Range(ge=2)] = 10  # classes per variable (categorical latents)
    prior: PriorName = "auto"  # normal, mixture, vamp; discrete: uniform, learned; auto
    prior_components: Count = 10  # components of a mixture / vamp prior
    encoder: NetworkName = "mlp"  # mlp, conv, or your own "package.module:Class" (own-model.md)
    decoder: NetworkName = "mlp"  # mlp, conv, or your own "package.module:Class"
    encoder_kwargs: Kwargs = field(default_factory=dict)  # keyword args of your encoder
    decoder_kwargs: Kwargs = field(default_factory=dict)  # keyword args of your decoder
    hidden: list[Count] = field(default_factory=lambda: [512])  # MLP hidden sizes; [] = linear
    encoder_hidden: list[Count] = field(default_factory=list)  # encoder's own; [] = hidden
    channels: list[Count] = field(default_factory=lambda: [32, 64])  # conv channels (stride 2)
    residual_blocks: Natural = 0  # conv networks: residual blocks per stage; 0 = plain conv
    activation: ActivationName = "relu"  # relu, tanh, elu, softplus, gelu, silu
    likelihood: LikelihoodName = "bernoulli"  # bernoulli, gaussian, continuous-bernoulli, ...
    likelihood_std: PositiveFloat = 0.1  # std of a gaussian likelihood (fixed: exactly this)
    likelihood_variance: VarianceName = "fixed"  # gaussian: fixed, shared, pixel, output
    latent_layers: list[Count] = field(default_factory=list)  # hierarchical: layer sizes from
    # the bottom up, e.g. [64, 32]; [] or one entry = one layer (of latent_dim / that size)
    # hierarchical q: bottom-up (IWAE paper) or top-down (LVAE)
    inference: Literal["bottom-up", "top-down"] = "bottom-up"
    # top-down q: ladder (LVAE precision-weighted), residual (NVAE)
    top_down: Literal["ladder", "residual"] = "ladder"
    layer_hidden: list[Count] = field(default_factory=lambda: [256])  # MLPs between layers
    conditional: bool = False  # labels into encoder and decoder: q(z|x,y), p(x|z,y)
    label_classes: Natural = 0  # conditional: label values (0 = from the training labels)


@dataclass
class ObjectiveConfig:
    name: ObjectiveName = "elbo"  # elbo or iwae
    samples: Count = 1  # K: Monte Carlo samples of z per datapoint
    kl: KLName = "auto"  # auto (analytic where registered, else Monte Carlo), analytic, mc,
    # or relaxed (the Concrete relaxation's own KL; gumbel-softmax / straight-through only)
    beta: NonNegative = 1.0  # weight of the KL term after warm-up
    warmup_epochs: NonNegative = 0.0  # linear KL warm-up from 0 to beta over this many epochs
    free_bits: NonNegative = 0.0  # minimum KL in nats per latent dimension (0 = off)
    free_bits_groups: Natural = 0  # >0: free_bits floors the KL of each of this many groups
    estimator: EstimatorName = "auto"  # auto, pathwise, score-function, gumbel-softmax, ...
    baseline: BaselineName = "none"  # score-function baseline: none, moving-average, nvil, ...
    baseline_decay: Annotated[float, Range(ge=0, lt=1)] = 0.9  # moving-average / nvil decay
    baseline_hidden: Count = 100  # nvil: hidden units of the MLP b(x)
    baseline_normalize: bool = False  # nvil: divide the signal by its running std
    temperature: PositiveFloat = 1.0  # relaxation temperature tau0 (discrete latents)
    temperature_min: PositiveFloat = 0.5  # floor of the annealed temperature (<= temperature)
    temperature_rate: NonNegative = 0.0  # r in tau = max(tau_min, tau0 exp(-r step)); 0 = const
    temperature_every: Count = 1000  # update the temperature every N steps
    prior_temperature: NonNegative = 0.0  # kl=relaxed: the relaxed prior's tau (0 = tau's)


@dataclass
class TrainConfig:
    epochs: Count = 30  # passes over the training split
    batch_size: Count = 128  # datapoints per optimisation step (the global batch)
    lr: PositiveFloat = 1e-3  # Adam learning rate
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"  # lr over epochs
    lr_decay: Annotated[float, Range(gt=0, le=1)] = 0.98  # per-epoch factor (exponential)
    grad_clip: NonNegative = 0.0  # max gradient norm (0 = no clipping)
    seed: Seed = 0  # seeds parameters, data order, binarization and sampling
    max_bad_steps: Count = 5  # stop after this many non-finite steps in a row
    time_limit_minutes: NonNegative = 0.0  # stop after the epoch that crosses this (0 = none)
    threads: Natural = 0  # torch intra-op threads (0 = all cores)
    progress: bool = True  # show a progress bar
    grad_variance_every: Natural = 0  # measure the gradient variance every N steps (0 = off)
    grad_variance_draws: Annotated[int, Range(ge=2)] = 10  # gradient estimates per measurement
    snapshot_every: Natural = 0  # save q(z|x) means of a test subset every N epochs (0 = off)
    snapshot_points: Count = 1000  # test points in each posterior snapshot
    checkpoint_every_steps: Natural = 0  # also checkpoint every N steps (0 = epoch ends only)
    keep_checkpoints: Natural = 3  # newest step-numbered checkpoints kept besides last/best
    # float32, or bf16 (networks autocast in training; evaluation is always float32)
    precision: Literal["float32", "bf16"] = "float32"
    compile: bool = False  # torch.compile the encoder and decoder for training
    fused: bool = True  # MLP Gaussian-Bernoulli VAE: its ELBO as one autograd node (fused_elbo.py)
    # float32 CPU products of the linear layers: oneDNN's or torch's own GEMM (MKL); auto
    # times both on the model's shapes when a run starts and records the faster in the run
    matmul: Literal["auto", "onednn", "torch"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto (CUDA when present), cpu, cuda
    init_from: RunFolder = ""  # start from this run folder's best weights (fresh optimizer)
    inference: InferenceName = "amortized"  # q(z|x): amortized, semi-amortized, mean-field
    refine_steps: Count = 5  # semi-amortized: SGD steps on the encoder's output per step
    refine_lr: PositiveFloat = 0.01  # semi-amortized: step size of those SGD steps
    refine_clip: NonNegative = 0.0  # semi-amortized: clip each datapoint's gradient (0 = off)
    refine_through: bool = False  # semi-amortized: backpropagate through the steps
    mean_field_steps: Count = 20  # mean-field: Adam steps on the batch's lambdas (E-step)
    mean_field_lr: PositiveFloat = 0.05  # mean-field: E-step learning rate (cosine to 1/20)
    mean_field_max: Count = 10000  # mean-field: largest training set (one lambda per point)
    loggers: list[Literal["tensorboard", "mlflow"]] = field(default_factory=list)  # trackers
    log_every_steps: Count = 50  # trackers: per-step scalars every N optimizer steps
    mlflow_uri: TrackingURI = ""  # MLflow tracking URI ("" = a local file store in RUN/mlruns)


@dataclass
class EvalConfig:
    iw_samples: Natural = 1000  # K of the importance-sampled log-likelihood (0 = skip it)
    batch_size: Count = 20  # datapoints per evaluation chunk
    sample_chunk: Count = 250  # importance samples per datapoint decoded at once; with
    #                          batch_size this bounds memory (20 x 250 x 784 floats = 16 MB)
    active_threshold: NonNegative = 0.01  # a unit is active when Cov_x(E_q[z_d]) exceeds this
    # mean-field runs: BBVI steps from the prior giving q for eval data; 0 = until converged
    # (inference/refine.py: 500-step cosine cycles until one gains < 0.002 nats per point)
    refine_steps: Natural = 0
    seed: Seed = 0  # seeds evaluation's draws (z, BBVI): the same run gives the same digits
    limit: Natural = 0  # evaluate only the first N points of a split (0 = all of it)
    short_run_iw_samples: Natural = 100  # K at the end of runs trained under a minute, when
    #                                      smaller than iw_samples (0 = always iw_samples)


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


# ---- checking values against their declarations -------------------------------------------

def section_types(section: Any) -> dict[str, Any]:
    """{field: declared type} of a config section, with its ``Annotated`` rules."""
    return typing.get_type_hints(type(section), include_extras=True)


def _unwrap(hint: Any) -> tuple[Any, Range | Text | None]:
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        rules = [e for e in extras if isinstance(e, Range | Text)]
        return base, rules[0] if rules else None
    return hint, None


def describe(hint: Any) -> str:
    """The valid values of a declared type, in words: 'an integer >= 1', 'one of ...'."""
    base, rule = _unwrap(hint)
    origin = typing.get_origin(base)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(base))
    if origin in (list, tuple):
        (item,) = typing.get_args(base)
        return f"a list like [512, 256] of items each {describe(item)}"
    if base is bool:
        return "true or false"
    if isinstance(rule, Text):
        return rule.meaning
    kind = {int: "an integer", float: "a number", str: "a string"}.get(base, str(base))
    return f"{kind} {rule.text()}" if isinstance(rule, Range) else kind


def show(value: Any) -> str:
    """A value as it would be written in TOML (true, 'text', [1, 2], nan)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def check_value(key: str, value: Any, hint: Any, *, on_disk: bool = True) -> Any:
    """``value`` coerced to the declared type (int -> float), or ConfigError naming ``key``,
    the value and the valid values in one line (``on_disk``: also the file system rules)."""
    base, rule = _unwrap(hint)
    origin = typing.get_origin(base)

    def bad() -> ConfigError:
        return ConfigError(f"{key}={show(value)}: must be {describe(hint)}")

    if origin in (list, tuple):
        if not isinstance(value, list):
            raise bad()
        (item,) = typing.get_args(base)
        try:
            return [check_value(key, v, item, on_disk=on_disk) for v in value]
        except ConfigError:
            raise bad() from None
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in config")
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad()
        return value
    if origin is Literal:
        if not isinstance(value, str) or value not in typing.get_args(base):
            raise bad()
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        value = float(value)
    elif base is str and not isinstance(value, str):
        raise bad()
    if isinstance(rule, Range) and not rule.ok(value):
        raise bad()
    if isinstance(rule, Text) and (on_disk or not rule.on_disk) and not rule.ok(value):
        raise bad()
    return value


def invalid_examples(hint: Any) -> list[Any]:
    """Values outside a declared type's valid set: one per bound, a wrong type, a wrong
    choice (what the table-driven validation test feeds to every field)."""
    base, rule = _unwrap(hint)
    origin = typing.get_origin(base)
    if origin is Literal:
        return ["not-a-choice", 1]
    if origin in (list, tuple):
        (item,) = typing.get_args(base)
        return [[bad] for bad in invalid_examples(item)] + ["not a list"]
    if base is bool:
        return ["maybe", 1]
    if isinstance(rule, Text):
        return [*rule.invalid, 5]
    if isinstance(rule, Range):
        return [*rule.examples(integer=base is int), 1.5 if base is int else "many"]
    return []  # undeclared: the validation test fails on it


def section_name(section: Any) -> str:
    """'train' for a TrainConfig, etc."""
    for f in dataclasses.fields(Config):
        if f.default_factory is type(section):
            return f.name
    raise TypeError(f"{type(section).__name__} is not a section of Config")


def check_section(section: Any, name: str | None = None, *, on_disk: bool = False) -> None:
    """Check every field of one config section against its declared valid values."""
    name = name or section_name(section)
    for key, hint in section_types(section).items():
        check_value(f"{name}.{key}", getattr(section, key), hint, on_disk=on_disk)


def check_fields(config: Config, *, on_disk: bool = False) -> Config:
    """Check every field of every section (one line naming the first bad key); returns
    ``config``. ``on_disk``: also the rules that look at the file system (folders that must
    exist). The rules between fields are ``build.validate``'s."""
    for f in dataclasses.fields(config):
        check_section(getattr(config, f.name), f.name, on_disk=on_disk)
    return config


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(options)}"


def apply_dict(config: Config, values: dict[str, Any], origin: str = "config") -> Config:
    """Apply nested ``{section: {key: value}}`` values onto ``config`` with type checks."""
    sections = [f.name for f in dataclasses.fields(config)]
    for section_key, entries in values.items():
        if section_key not in sections:
            raise ConfigError(f"unknown section '{section_key}' in {origin}"
                              + _suggest(section_key, sections))
        if not isinstance(entries, dict):
            raise ConfigError(f"'{section_key}' in {origin} must be a table of keys")
        section = getattr(config, section_key)
        hints = section_types(section)
        for key, value in entries.items():
            if key not in hints:
                all_keys = [f"{s}.{k}" for s in sections
                            for k in section_types(getattr(config, s))]
                raise ConfigError(f"unknown key '{section_key}.{key}' in {origin}"
                                  + _suggest(f"{section_key}.{key}", all_keys))
            setattr(section, key, check_value(f"{section_key}.{key}", value, hints[key],
                                              on_disk=False))
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


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file's tables; ConfigError naming the file when it is not UTF-8 TOML."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as "
                          "UTF-8 TOML") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what} {path} is not valid TOML: {err}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file at ``path``, then each ``section.key=value`` override;
    every field is then checked against its declared valid values."""
    config = Config()
    if path is not None:
        path = Path(path)
        shipped = packaged_config(str(path)) if not path.is_file() else None
        if shipped is not None:  # an example shipped with vaelab: -c default
            path = shipped
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass an existing .toml file or "
                              "the name of a shipped example (`vaelab configs` lists them)")
        apply_dict(config, read_toml(path), origin=str(path))
    for text in overrides or []:
        apply_dict(config, parse_override(text), origin=f"--set {text}")
    return check_fields(config)


def packaged_config(name: str) -> Path | None:
    """The example config ``name`` (e.g. ``default``, ``seeds/002_conv``) shipped inside the
    package (``vaelab/configs``, the repo's configs/), or None."""
    from importlib.resources import files

    stem = name[:-5] if name.endswith(".toml") else name
    if not stem or stem.startswith(("/", ".")) or ".." in stem.split("/"):
        return None
    path = Path(str(files("vaelab") / "configs" / f"{stem}.toml"))
    return path if path.is_file() else None


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config saved with a run."""
    return apply_dict(Config(), values, origin="saved config")
