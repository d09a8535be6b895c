"""A split as trained and as evaluated: loading by config, row limits, binarization, checks.

Training sees dynamic (or static) binarization of Bernoulli data; evaluation always sees one
fixed, seeded binarization, so numbers from different runs and commands compare.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vaelab.config import Config, ConfigError
from vaelab.data.batching import check_unit_interval, fixed_binarization
from vaelab.data.dataset import ArrayDataset
from vaelab.data.loading import load_dataset
from vaelab.data.rows import Rows
from vaelab.data.tables import is_table


def load_split(config: Config, split: str) -> ArrayDataset:
    """The named split of ``data.name``, as stored (not binarized); a file of one array is
    cut by the seeded split of ``data.split_fractions``/``data.split_seed``."""
    if is_table(config.data.name) and config.model.likelihood != "gaussian":
        raise ConfigError(f"model.likelihood={config.model.likelihood} does not fit a table "
                          f"({config.data.name}: real-valued, standardised columns); set "
                          f"model.likelihood=gaussian")
    return load_dataset(config.data.name, split, data_dir=config.data.data_dir or None,
                        options=config.data)


def limit_rows(data: ArrayDataset, limit: int) -> ArrayDataset:
    """The first ``limit`` rows (data.train_limit; 0 = all): a small training subset."""
    n = len(data)
    if limit < 0 or limit > n:
        raise ConfigError(f"data.train_limit={limit} must be between 0 (all) and the "
                          f"{data.split} split's {n} points")
    if limit in (0, n):
        return data
    return dataclasses.replace(data, values=data.values[:limit],
                               y=None if data.y is None else data.y[:limit],
                               source=f"{data.source} (first {limit})")


def uses_binarization(config: Config) -> bool:
    return config.model.likelihood == "bernoulli" and config.data.binarize != "none"


def prepare_eval_x(config: Config, data: ArrayDataset) -> torch.Tensor:
    """Evaluation data: a fixed, seeded binarization for Bernoulli data, so numbers compare."""
    if uses_binarization(config):
        return fixed_binarization(data.x, config.data.binarize_seed)
    return data.x


def check_data(config: Config, likelihood: Any, data: ArrayDataset) -> None:
    """Refuse data outside the likelihood's support (``likelihood``: a models.likelihoods
    object, read for ``data_range`` and ``requires_8bit``)."""
    lo_hi = likelihood.data_range
    if lo_hi == (0.0, 1.0):
        check_unit_interval(data.x, f"{data.name} ({data.split})")
    if getattr(likelihood, "requires_8bit", False) and not data.is_8bit:
        raise ConfigError(f"model.likelihood={config.model.likelihood} models the 256 levels of "
                          f"8-bit data, but {data.name} ({data.split}) is not 8-bit (uint8 "
                          "values k/255); use model.likelihood=continuous-bernoulli or gaussian")


def eval_split(config: Config) -> str:
    """The split pictures and audits look at: test, else validation, else training."""
    data = config.data
    return data.test_split or data.valid_split or data.train_split


def resolve_label_classes(config: Config, train: ArrayDataset | Rows) -> None:
    """model.conditional: check the training split has labels and, when
    model.label_classes is 0, set it from them (saved with the run's config)."""
    if not config.model.conditional:
        return
    if train.y is None:
        raise ConfigError(f"model.conditional=true needs labels, but {train.name} "
                          f"({train.split}) has none; use labelled data (an .npz with y_train, "
                          "y_valid, y_test) or model.conditional=false")
    if config.model.label_classes == 0:
        config.model.label_classes = int(train.y.max().item()) + 1


def with_labels(config: Config, data: ArrayDataset, x: torch.Tensor) -> torch.Tensor:
    """model.conditional: the batch tensor (N, D + C), flattened x then one-hot y (see
    models/hierarchical.py); otherwise x unchanged. ``x`` is ``data.x`` as prepared."""
    if not config.model.conditional:
        return x
    classes = config.model.label_classes
    if data.y is None:
        raise ConfigError(f"model.conditional=true needs labels, but {data.name} "
                          f"({data.split}) has none; use labelled data or "
                          "model.conditional=false")
    if int(data.y.max().item()) >= classes or int(data.y.min().item()) < 0:
        raise ConfigError(f"{data.name} ({data.split}) has labels outside 0..{classes - 1} "
                          f"(model.label_classes={classes}); set model.label_classes to the "
                          "number of label values")
    y = torch.nn.functional.one_hot(data.y, classes).to(x.dtype)
    return torch.cat([x.reshape(x.shape[0], -1), y], 1)
