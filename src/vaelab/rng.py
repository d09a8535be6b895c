"""Random numbers: seeds, the global random state of a checkpoint, and sharded draws.

Sharded draws keep N data-parallel processes on the noise of one: every rank draws the noise
of the *whole* global batch and keeps its own slice, so each datapoint gets the random numbers
it would get in a one-process run (see ``training/distributed.py`` for how batches are split).
Estimators draw through :func:`draw`; they need no process group for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch.distributions import Distribution

from vaelab.data import binarize


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block on torch's generators seeded with ``seed`` (the CPU's and, for a CUDA
    ``device``, that device's), then restore the states they had: evaluation draws the same
    noise every time without disturbing the caller's random stream."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def rng_states() -> dict[str, Any]:
    """Every global random state (torch, CUDA, numpy, python) as tensors and plain values,
    so a checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    # legacy=True gives MT19937's tuple; numpy's stub also allows the dict form
    _, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float],
                                           np.random.get_state(legacy=True))
    version, py_state, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()),
                     p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- sharding of global batches and of their random numbers --------------------------------

@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` processes holds one equal slice of each global batch."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (``n`` divisible by ``world``)."""
        if n % self.world:
            raise ValueError(f"a global batch of {n} cannot be split evenly over "
                             f"{self.world} processes")
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)


_SHARD: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("vaelab_shard",
                                                                      default=None)
_WHOLE = Shard()


@contextlib.contextmanager
def sharded(shard: Shard) -> Iterator[None]:
    """Within this block, :func:`draw` and :func:`bernoulli` act on ``shard`` of a global batch."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def current_shard() -> Shard:
    return _SHARD.get() or _WHOLE


def draw(d: Distribution, sample_shape: Sequence[int] = (), *, reparam: bool = True
         ) -> torch.Tensor:
    """``d.rsample(sample_shape)`` (or ``d.sample``) for this rank's slice of a global batch.

    ``d`` has batch shape (b, ...) for the local b = B/W datapoints. The noise of the whole
    global batch is drawn, shape ``(*sample_shape, W, b, ...)`` — the same random numbers, in
    the same order, as one process drawing for (B, ...) — and slice ``rank`` is kept, so
    every datapoint gets the noise it gets in a one-process run. Costs W times the sampling
    arithmetic (not the networks). Outside :func:`sharded` it is the plain sample.
    """
    shard = current_shard()
    shape = torch.Size(sample_shape)
    if shard.world == 1:
        return d.rsample(shape) if reparam else d.sample(shape)
    full = d.expand(torch.Size([shard.world, *d.batch_shape]))
    out = full.rsample(shape) if reparam else full.sample(shape)
    return out.select(len(shape), shard.rank)


def standard_normal(b: int, d: int, device: torch.device | str | None = None, *,
                    samples: int | None = None) -> torch.Tensor:
    """(b, d) N(0, 1) noise for this rank's b rows of a global batch, on ``device``: the
    numbers :func:`draw` gives a pathwise sample of a (b, d) Normal, without building one;
    with ``samples`` = K, (K, b, d): those of ``draw(normal, (K,))``."""
    shard = current_shard()
    lead = () if samples is None else (samples,)
    if shard.world == 1:
        return torch.randn(*lead, b, d, device=device)
    return torch.randn(*lead, shard.world, b, d, device=device).select(len(lead), shard.rank)


def bernoulli(p: torch.Tensor) -> torch.Tensor:
    """Dynamic binarization (``data.binarize``) of this rank's rows ``p`` (b, ...) of a
    global batch: uniforms for all W*b rows are drawn and this rank's slice kept (see
    :func:`draw`), so every row gets the noise it gets in a 1-process run. Training
    batches only: their dataset's range was checked when it was loaded."""
    shard = current_shard()
    if shard.world == 1:
        return binarize(p, check=False)
    u = torch.rand(shard.world, *p.shape, device=p.device)[shard.rank]
    return u.lt_(p.to(torch.float32))
