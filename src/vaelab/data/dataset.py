"""The in-memory dataset type, and the checks every array passes before it becomes one.

8-bit data stay uint8 in memory (``ArrayDataset.values``); ``to_unit`` makes float32 of
them where they are used: per training batch, or once for an evaluation split (``.x``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .errors import DataError

SPLITS = ("train", "valid", "train+valid", "test", "all")


def to_unit(values: torch.Tensor) -> torch.Tensor:
    """Stored values as float32: uint8 k -> k/255 (the same float32 numbers as numpy's
    ``x.astype(float32) / 255``: one correctly rounded division), float32 as it is."""
    if values.dtype == torch.uint8:
        return values.to(torch.float32).div_(255)
    return values


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole dataset as tensors in memory; batching indexes ``values`` directly.

    Attributes:
        values: the rows as stored, (N, *event_shape): uint8 for 8-bit data (a quarter of
            float32's memory; training converts each batch), else float32.
        y: int64 labels (N,), or None.
        name: "mnist", "fashion-mnist", or the user file's path.
        split: one of "train", "valid", "train+valid", "test", "all".
        source: where the data came from, for logs and reports.
        is_8bit: True when every value is exactly k/255 (the data were uint8), so the
            caller can report bits/dim and use an 8-bit likelihood.
        info: what a run records about the data (JSON values; see ``facts``): the seeded
            split of a single-array file, an image folder's classes, a table's columns
            and standardisation. Empty for the built-in datasets.

    ``x`` is the float32 view, (N, C, H, W) images scaled to [0, 1] or (N, D): made from
    uint8 values on first use and kept (evaluation splits); training never asks for it.
    """

    values: torch.Tensor
    y: torch.Tensor | None
    name: str
    split: str
    source: str
    is_8bit: bool
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.values
        if v.dim() < 2 or not (v.dtype == torch.float32
                               or (v.dtype == torch.uint8 and self.is_8bit)):
            raise DataError(f"ArrayDataset.values must be float32 (N, ...), or uint8 with "
                            f"is_8bit=True, got {v.dtype} {tuple(v.shape)}; build datasets "
                            f"with load_dataset()")
        if self.y is not None and (self.y.dtype != torch.int64
                                   or tuple(self.y.shape) != (v.shape[0],)):
            raise DataError(f"ArrayDataset.y must be int64 ({v.shape[0]},), got "
                            f"{self.y.dtype} {tuple(self.y.shape)}; pass one label per row")
        if self.split not in SPLITS:
            raise DataError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")

    @cached_property
    def x(self) -> torch.Tensor:
        """float32 (N, *event_shape): the values in [0, 1] for 8-bit data (made once)."""
        return to_unit(self.values)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one datapoint, e.g. (1, 28, 28) or (D,)."""
        return tuple(self.values.shape[1:])

    def __len__(self) -> int:
        return self.values.shape[0]

    def __repr__(self) -> str:
        labels = "no labels" if self.y is None else "labels"
        return (f"ArrayDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"event_shape={self.event_shape}, {labels}, is_8bit={self.is_8bit}, "
                f"stored={str(self.values.dtype).removeprefix('torch.')}, "
                f"source={self.source!r})")


def images_to_tensor(x: np.ndarray, what: str) -> tuple[torch.Tensor, bool]:
    """Validate a numeric array and return (tensor as stored, is_8bit).

    Accepts (N, D) vectors, (N, H, W) images (a channel axis is added) and (N, C, H, W).
    uint8 is kept as uint8 and marked 8-bit (``to_unit`` scales it by 1/255 when used);
    other numbers become float32 as they are.
    """
    check_array(x, what)
    is_8bit = x.dtype == np.uint8
    if is_8bit:
        # a writable, C-ordered array of our own (torch.from_numpy shares the memory)
        xs = x if x.flags.writeable and x.flags.c_contiguous else np.array(x, order="C")
    else:
        xs = float32_rows(x, what)
    if xs.ndim == 3:
        xs = xs[:, None]
    return torch.from_numpy(np.ascontiguousarray(xs)), is_8bit


def check_array(x: np.ndarray, what: str) -> None:
    """Refuse arrays that are not numbers of a usable shape (the message names ``what``)."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what}: x has dtype {x.dtype}, not numbers; save a numeric array "
                        f"(uint8 images or float features)")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{what}: x has shape {x.shape}; need (N, D) vectors, (N, H, W) or "
                        f"(N, C, H, W) images")
    if 0 in x.shape:
        raise DataError(f"{what}: x has shape {x.shape}, which holds no data; save at least "
                        f"one non-empty row")


def float32_rows(x: np.ndarray, what: str) -> np.ndarray:
    """Non-uint8 numbers as a fresh, writable, native-order float32 array; refuses NaN and
    infinite values (after the conversion, so float64 overflow counts)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
        xf = x.astype(np.float32)  # always a fresh, writable, native-order copy
    if not np.isfinite(xf).all():
        n_nan = int(np.isnan(xf).sum())
        n_inf = int(np.isinf(xf).sum())
        raise DataError(f"{what}: x has {n_nan} NaN and {n_inf} infinite values (after "
                        f"conversion to float32); remove or impute them first")
    return xf


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
    return ArrayDataset(values=xt, y=yt, name=name, split=split, source=source,
                        is_8bit=is_8bit, info=info or {})


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    """Raise DataError unless every value of ``x`` lies in [0, 1] (as Bernoulli-type
    likelihoods need); the message names the range found and the fix."""
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise DataError(f"{what} has values in [{lo:.4g}, {hi:.4g}], outside [0, 1]: use a "
                        f"Gaussian likelihood, or rescale the data to [0, 1]")
