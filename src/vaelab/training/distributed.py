"""Data-parallel training on torch.distributed: process group, sharding, rank-0-only writes.

Launch with PyTorch's own launcher, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT for every process::

    torchrun --standalone --nproc-per-node 2 -m vaelab train ...      # one machine
    vaelab train --nproc 2 ...                                        # the same, shorter

:func:`setup` joins that process group (gloo on CPU, nccl on CUDA) and picks the device.

How a global batch of B datapoints is split so that W processes compute what one would:
every rank draws the same permutation (same seed), takes rows ``[r B/W, (r+1) B/W)`` of
each global batch, averages its loss over them, and DistributedDataParallel averages the
gradients over ranks: the mean over B. Random numbers follow the same rule: inside
:func:`sharded`, :func:`draw` and :func:`bernoulli` draw the noise of the *whole* global
batch on every rank and keep the rank's slice, so each datapoint gets the noise it would
get in a one-process run, and every rank's random stream stays in step with that run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# How long the other ranks wait at the end for rank 0's evaluation. Long on purpose: if rank 0
# dies instead, torchrun stops the whole job at once.
LEAVE_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size, device, backend."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""  # "gloo" or "nccl"; "" when not distributed
    owns_group: bool = False  # setup() created the process group (cleanup() destroys it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (the local rank's GPU) when present, else CPU; or ``cpu`` / ``cuda``."""
    if name not in ("auto", "cpu", "cuda"):
        from vaelab.config import ConfigError

        raise ConfigError(f"train.device must be auto, cpu or cuda, got '{name}'")
    if name == "cuda" and not torch.cuda.is_available():
        from vaelab.config import ConfigError

        raise ConfigError("train.device=cuda but no CUDA device is available; "
                          "use train.device=auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes (if any) and choose this rank's device.

    Idempotent: a process group created by the caller is used and left alone.
    """
    world = env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                       dist.get_backend(), owns_group=False)
    if world <= 1:
        return Context(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://")
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend,
                   owns_group=True)


def current() -> Context:
    """The running job as torch.distributed sees it (rank 0 of 1 when not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
        else torch.device("cpu")
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def cleanup(ctx: Context, *, wait: bool = True) -> None:
    """Leave the process group if :func:`setup` created it.

    ``wait``: first wait until every rank gets here, so no rank tears down its gloo
    connections while a peer still works (rank 0 evaluates after training). A rank that
    leaves early can die with SIGABRT ("terminate called without an active exception").
    Pass ``wait=False`` after an error, when the peers may never arrive.
    """
    if not (ctx.owns_group and dist.is_initialized()):
        return
    if wait and ctx.world > 1:
        if ctx.backend == "gloo":  # the evaluation on rank 0 may take longer than the
            dist.monitored_barrier(timeout=LEAVE_TIMEOUT)  # default 30-minute timeout
        else:
            dist.barrier()
    dist.destroy_process_group()


# ---- collectives (no-ops in a single process) ----------------------------------------------

def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (a new tensor; ``t`` itself is left as it was)."""
    if not _active():
        return t
    out = t.detach().clone()
    if dist.get_backend() == "nccl":
        out = out.cuda()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank: keeps control flow in step."""
    if not _active():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable Python objects: paths, messages)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and return its result on every rank; an exception raised
    there is raised on every rank (so no rank waits forever for one that failed)."""
    result, error = None, None
    if current().is_main:
        try:
            result = fn()
        except Exception as err:
            error = err
    result, error_info = broadcast_object(
        (result, None if error is None else (type(error), str(error))))
    if error is not None:
        raise error
    if error_info is not None:
        kind, message = error_info
        raise kind(message) if issubclass(kind, ValueError | OSError | RuntimeError) \
            else RuntimeError(message)
    return result


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """``module`` in DistributedDataParallel when the job has several ranks, else itself."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class StepModule(nn.Module):
    """Runs a training step function as ``forward``, so DistributedDataParallel sees the
    whole step (it synchronises gradients only of work done inside its forward)."""

    def __init__(self, module: nn.Module, step_fn: Callable[..., Any]):
        super().__init__()
        self.inner = module
        self.step_fn = step_fn

    def forward(self, *args: Any) -> Any:
        return self.step_fn(*args)
