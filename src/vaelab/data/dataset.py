"""The in-memory dataset type, and the checks every array passes before it becomes one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import DataError

SPLITS = ("train", "valid", "train+valid", "test", "all")


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole dataset as tensors in memory; batching indexes ``x`` directly.

    Attributes:
        x: float32, (N, *event_shape): (N, C, H, W) images scaled to [0, 1], or (N, D).
        y: int64 labels (N,), or None.
        name: "mnist", "fashion-mnist", or the user file's path.
        split: one of "train", "valid", "train+valid", "test", "all".
        source: where the data came from, for logs and reports.
        is_8bit: True when every value is exactly k/255 (the data were uint8), so the
            caller can report bits/dim and use an 8-bit likelihood.
        info: what a run records about the data (JSON values; see ``facts``): the seeded
            split of a single-array file, an image folder's classes, a table's columns
            and standardisation. Empty for the built-in datasets.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    split: str
    source: str
    is_8bit: bool
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() < 2:
            raise DataError(f"ArrayDataset.x must be float32 (N, ...), got {self.x.dtype} "
                            f"{tuple(self.x.shape)}; build datasets with load_dataset()")
        if self.y is not None and (self.y.dtype != torch.int64
                                   or tuple(self.y.shape) != (self.x.shape[0],)):
            raise DataError(f"ArrayDataset.y must be int64 ({self.x.shape[0]},), got "
                            f"{self.y.dtype} {tuple(self.y.shape)}; pass one label per row")
        if self.split not in SPLITS:
            raise DataError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one datapoint, e.g. (1, 28, 28) or (D,)."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        labels = "no labels" if self.y is None else "labels"
        return (f"ArrayDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"event_shape={self.event_shape}, {labels}, is_8bit={self.is_8bit}, "
                f"source={self.source!r})")


def images_to_tensor(x: np.ndarray, what: str) -> tuple[torch.Tensor, bool]:
    """Validate a numeric array and return (float32 tensor, is_8bit).

    Accepts (N, D) vectors, (N, H, W) images (a channel axis is added) and (N, C, H, W).
    uint8 is scaled by 1/255 and marked 8-bit; other numbers are kept as they are.
    """
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what}: x has dtype {x.dtype}, not numbers; save a numeric array "
                        f"(uint8 images or float features)")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{what}: x has shape {x.shape}; need (N, D) vectors, (N, H, W) or "
                        f"(N, C, H, W) images")
    if 0 in x.shape:
        raise DataError(f"{what}: x has shape {x.shape}, which holds no data; save at least "
                        f"one non-empty row")
    is_8bit = x.dtype == np.uint8
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
        xf = x.astype(np.float32)  # always a fresh, writable, native-order copy
    if is_8bit:
        xf /= 255
    elif not np.isfinite(xf).all():
        n_nan = int(np.isnan(xf).sum())
        n_inf = int(np.isinf(xf).sum())
        raise DataError(f"{what}: x has {n_nan} NaN and {n_inf} infinite values (after "
                        f"conversion to float32); remove or impute them first")
    if xf.ndim == 3:
        xf = xf[:, None]
    return torch.from_numpy(np.ascontiguousarray(xf)), is_8bit


def labels_to_tensor(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    """Validate integer labels, one per row of x, and return them as int64 (N,)."""
    if y.dtype.kind not in "iu":
        raise DataError(f"{what}: y has dtype {y.dtype}; labels must be integers")
    if y.shape != (n,):
        raise DataError(f"{what}: y has shape {y.shape} but x has {n} rows; save one label "
                        f"per row, shape ({n},)")
    return torch.from_numpy(y.astype(np.int64))


def make_dataset(x: np.ndarray, y: np.ndarray | None, *, name: str, split: str,
                 source: str, what: str, info: dict[str, Any] | None = None) -> ArrayDataset:
    """Validate numpy arrays and wrap them as an :class:`ArrayDataset`."""
    xt, is_8bit = images_to_tensor(x, what)
    yt = None if y is None else labels_to_tensor(y, xt.shape[0], what)
    return ArrayDataset(x=xt, y=yt, name=name, split=split, source=source, is_8bit=is_8bit,
                        info=info or {})


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    """Raise DataError unless every value of ``x`` lies in [0, 1] (as Bernoulli-type
    likelihoods need); the message names the range found and the fix."""
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise DataError(f"{what} has values in [{lo:.4g}, {hi:.4g}], outside [0, 1]: use a "
                        f"Gaussian likelihood, or rescale the data to [0, 1]")
