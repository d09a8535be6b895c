"""Minibatches from a tensor or a row store, and binarization of [0, 1] data.

Batches are slices of one random permutation per epoch, gathered by row numbers
(``index_select`` in memory; see ``rows.py`` for stores): no DataLoader, no per-item
Python work for in-memory data. Dynamic binarization draws a fresh Bernoulli(x)
sample each time (as in Burda et al., "Importance Weighted Autoencoders", 2016); the
fixed binarization used for evaluation draws from a SplitMix64 stream, so its bits are
identical on every device and library version and numbers compare across runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, overload

import torch

from .dataset import check_unit_interval
from .errors import DataError
from .hashing import uniforms
from .rows import Rows, as_rows


@overload
def iterate_minibatches(x: torch.Tensor | Rows, batch_size: int, *, generator: torch.Generator,
                        drop_last: bool = ..., start: int = ...,
                        return_indices: Literal[False] = ...) -> Iterator[torch.Tensor]: ...
@overload
def iterate_minibatches(x: torch.Tensor | Rows, batch_size: int, *, generator: torch.Generator,
                        drop_last: bool = ..., start: int = ...,
                        return_indices: Literal[True]
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
@overload
def iterate_minibatches(x: torch.Tensor | Rows, batch_size: int, *, generator: torch.Generator,
                        drop_last: bool = ..., start: int = ..., return_indices: bool = ...
                        ) -> Iterator[Any]: ...  # a bool known only at run time: either
def iterate_minibatches(x: torch.Tensor | Rows, batch_size: int, *,
                        generator: torch.Generator, drop_last: bool = False, start: int = 0,
                        return_indices: bool = False
                        ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled minibatches of ``x`` (N, ...): a tensor or a row store
    (``data/rows.py``: uint8 in memory, memory-mapped files, a torch Dataset).

    The permutation is drawn from ``generator`` when this is called, not lazily, so the
    generator's state after the call does not depend on how far the epoch is consumed.
    A run resumed mid-epoch restores the generator state saved at the epoch's start and
    passes ``start`` = the number of batches already done, to get the same remaining
    batches. With ``return_indices`` it yields (idx (B,) int64, xb (B, ...)), idx being
    row numbers of ``x`` (datapoint ids for per-datapoint parameters).
    """
    rows = as_rows(x)
    batches = index_batches(len(rows), batch_size, generator=generator, drop_last=drop_last,
                            start=start, device=rows.index_device)
    return _batches(rows, batches, return_indices)


def index_batches(n: int, batch_size: int, *, generator: torch.Generator,
                  drop_last: bool = False, start: int = 0,
                  device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """One epoch of shuffled row numbers of ``n`` rows, in batches (B,) int64 on ``device``:
    what ``iterate_minibatches`` reads. The trainer cuts each batch to its rank's slice
    before reading it, so a process reads only its own rows."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_batches = n // batch_size if drop_last else -(-n // batch_size)
    if not 0 <= start <= n_batches:
        raise DataError(f"start={start} is outside this epoch's {n_batches} batches; pass the "
                        f"number of batches already done, 0 to {n_batches}")
    perm = torch.randperm(n, generator=generator, device=generator.device)
    if device is not None:
        perm = perm.to(device)
    return (perm[b * batch_size:(b + 1) * batch_size] for b in range(start, n_batches))


def _batches(rows: Rows, batches: Iterator[torch.Tensor], return_indices: bool) -> Iterator:
    for idx in batches:
        xb = rows.gather(idx)
        yield (idx, xb) if return_indices else xb


def binarize(x: torch.Tensor, generator: torch.Generator | None = None, *,
             check: bool = True) -> torch.Tensor:
    """A fresh Bernoulli(x) draw, float32 0/1, same shape and device (dynamic binarization).

    Drawn as ``u < x`` with u ~ U[0, 1): the same law as ``torch.bernoulli`` (up to float32's
    2^-24 grid) and about 4x faster on the CPU (0.21 vs 1.0 ms for a 128 x 784 batch, one
    thread), where torch.bernoulli was 18% of a default training step. ``check=False``
    skips the range check, for batches of a dataset checked once when it was loaded.
    """
    if check and x.numel() and (x.min() < 0 or x.max() > 1):
        check_unit_interval(x, "binarize input")
    u = torch.rand(x.shape, generator=generator, device=x.device)
    return u.lt_(x.to(torch.float32))


def fixed_binarization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A deterministic Bernoulli(x) draw: element i of ``x`` (C order) is 1 iff the i-th
    SplitMix64 uniform of ``seed`` is below it. The same seed and ``x`` give the same
    bits everywhere; binarize a whole evaluation set in one call."""
    check_unit_interval(x, "fixed_binarization input")
    u = torch.from_numpy(uniforms(seed, x.numel()).reshape(tuple(x.shape)))
    p = x.detach().to(device="cpu", dtype=torch.float64)
    return (u < p).to(device=x.device, dtype=torch.float32)


__all__ = ["binarize", "fixed_binarization", "index_batches", "iterate_minibatches"]
