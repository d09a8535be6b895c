"""A model-agnostic training loop: optimizer, schedule, progress, checkpoints, divergence.

The trainer knows nothing about VAEs. It gets a module, a ``step_fn(batch, progress)`` that
returns ``(loss, terms)`` — ``terms`` are named per-datapoint tensors used for logging and
for naming the culprit when something goes non-finite — and an optional ``validate_fn``.

The training data are a row store (``data/rows.py``) or a tensor: each epoch draws one
permutation of row numbers and each batch is read by its row numbers.

Data parallel (see ``distributed.py``): under torchrun every rank runs this loop on its
slice of each global batch (the batch's row numbers are cut first, so a rank reads only its
own rows), the step runs inside DistributedDataParallel, control
decisions (skip a step, stop) are taken jointly, epoch metrics are summed over ranks, and
only rank 0 calls the epoch-end and checkpoint hooks. Checkpoints can be taken every
``train.checkpoint_every_steps`` steps; they hold the position inside the epoch and every
random state, so a resumed run continues exactly where the checkpoint was taken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab import console
from vaelab.config import ConfigError, TrainConfig
from vaelab.data.batching import index_batches
from vaelab.data.rows import Rows, as_rows
from vaelab.models.torch_private import scale_, tensor_norms
from vaelab.rng import Shard, rng_states, set_rng_states, sharded
from vaelab.schedules import Progress
from vaelab.training import distributed, moments

StepFn = Callable[[torch.Tensor, Progress], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# with Trainer(with_indices=True) the batch is (idx, xb): idx (B,) the rows of train_x, for
# step functions that keep per-datapoint state (inference.PerDatapointParams)
# called after each optimizer step with (trainer, batch, progress); may return a record
StepHook = Callable[["Trainer", torch.Tensor, Progress], "dict[str, Any] | None"]
# turns an epoch's record into the text of its log line (after "epoch N/M: ")
EpochLine = Callable[[dict[str, Any]], str]


def describe_epoch(record: dict[str, Any]) -> str:
    """The default epoch line: every train_/val_ number, throughput and elapsed time."""
    skip = {"train_seconds"}
    terms = [f"{k} {v:.4g}" for k, v in record.items() if k.startswith(("train_", "val_"))
             and k not in skip and isinstance(v, int | float)]
    return ", ".join([*terms, f"{record['images_per_sec']:.0f} images/s",
                      f"{record['wall_time']:.1f} s"])


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    best: float = -math.inf  # best validation score (higher is better)
    bad_steps: int = 0  # consecutive skipped (non-finite) steps
    elapsed: float = 0.0  # training seconds so far, across resumes
    # the epoch in progress (what a mid-epoch checkpoint needs to continue it exactly)
    batch: int = 0  # batches of the current epoch done
    epoch_rng: torch.Tensor | None = None  # data-order generator state at the epoch's start
    epoch_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # term sums so far
    epoch_seen: int = 0  # datapoints summed into epoch_sums
    epoch_seconds: float = 0.0  # training seconds of the epoch so far
    epoch_records: list[dict[str, Any]] = field(default_factory=list)  # step-hook records
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best": self.best,
                "bad_steps": self.bad_steps, "elapsed": self.elapsed, "batch": self.batch,
                "epoch_rng": self.epoch_rng,
                "epoch_sums": {k: v.detach().cpu() for k, v in self.epoch_sums.items()},
                "epoch_seen": self.epoch_seen, "epoch_seconds": self.epoch_seconds,
                "epoch_records": list(self.epoch_records)}


def make_scheduler(cfg: TrainConfig,
                   optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule."""
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    raise ValueError(f"train.lr_schedule must be constant, cosine or exponential, "
                     f"got '{cfg.lr_schedule}'")


def make_optimizer(module: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused single-kernel variant where it applies (measured 1.5x faster training
    steps for the default model on 2 CPU cores: the per-tensor foreach kernels dominate)."""
    params = [p for p in module.parameters() if p.requires_grad]
    fusable = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=fusable or None)
    except (RuntimeError, TypeError):  # an older torch without fused CPU Adam
        return torch.optim.Adam(params, lr=lr)


def first_nonfinite_grad(module: nn.Module) -> str | None:
    for name, param in module.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return name
    return None


class Trainer:
    """Adam + schedule + validation + checkpoint hooks around a user step function."""

    def __init__(self, cfg: TrainConfig, module: nn.Module, step_fn: StepFn, *,
                 validate_fn: Callable[[], dict[str, float]] | None = None,
                 score_key: str | None = None, bar_term: str | None = None,
                 epoch_line: EpochLine = describe_epoch,
                 on_epoch_end: Callable[[Trainer, dict[str, Any]], None] | None = None,
                 save_checkpoint: Callable[[Trainer, bool], None] | None = None,
                 on_step_end: StepHook | None = None, with_indices: bool = False,
                 step_metrics: Callable[[int, dict[str, float]], None] | None = None):
        self.cfg = cfg
        self.module = module
        self.step_fn = step_fn
        self.validate_fn = validate_fn
        self.score_key = score_key  # validation key to maximise for best.pt (None: latest)
        self.bar_term = bar_term  # step term whose running mean the progress bar shows
        self.epoch_line = epoch_line
        self.on_epoch_end = on_epoch_end
        self.save_checkpoint = save_checkpoint
        self.on_step_end = on_step_end  # its non-empty returns go to record["step_records"]
        self.with_indices = with_indices  # batches are (idx, xb) (see StepFn)
        # (step, batch means of the terms) every cfg.log_every_steps steps: experiment trackers
        self.step_metrics = step_metrics
        self.optimizer = make_optimizer(module, cfg.lr)
        # the trained parameters, listed once instead of walking the module tree every step
        # (12 us of a 3-5 ms default-model step)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.state = TrainState()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.stop_reason = ""
        self.ctx = distributed.current()
        if self.ctx.distributed and cfg.batch_size % self.ctx.world:
            raise ConfigError(f"train.batch_size={cfg.batch_size} (the global batch) must be "
                              f"divisible by the {self.ctx.world} processes")
        # under DDP the whole step runs as the wrapper's forward, so gradients are averaged
        self.forward = distributed.wrap(distributed.StepModule(module, step_fn), self.ctx) \
            if self.ctx.distributed else step_fn

    # -- state for checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "trainer": self.state.to_dict(),
                "data_rng": self.generator.get_state(),
                "rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key, value in state["trainer"].items():
            setattr(self.state, key, value)
        if not self.ctx.is_main:  # rank 0 saved the ranks' summed partial metrics
            self.state.epoch_sums = {k: torch.zeros_like(v)
                                     for k, v in self.state.epoch_sums.items()}
            self.state.epoch_seen = 0
        self.generator.set_state(state["data_rng"])
        set_rng_states(state["rng"])

    # -- the loop ------------------------------------------------------------------------
    def _step(self, batch: torch.Tensor, progress: Progress) -> dict[str, torch.Tensor] | None:
        with sharded(Shard(self.ctx.rank, self.ctx.world)):
            loss, terms = self.forward(batch, progress)
        where = f"step {self.state.step} (epoch {self.state.epoch + 1})"
        # every rank skips, or none; math.isfinite: one scalar read, not four tensor ops
        if distributed.any_rank(not math.isfinite(loss.item())):
            bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
            self._skip(f"non-finite loss at {where}; non-finite terms: "
                       f"{', '.join(bad) or 'none (the loss itself)'}")
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(tensor_norms(grads))) if grads \
            else torch.zeros(())
        if not math.isfinite(norm.item()):  # before clipping, which would spread the NaN
            name = first_nonfinite_grad(self.module)
            self._skip(f"non-finite gradient at {where} in parameter '{name}'")
            return None
        if 0 < self.cfg.grad_clip < norm:
            scale_(grads, self.cfg.grad_clip / (float(norm) + 1e-6))
        self.optimizer.step()
        if (self.state.step + 1) % moments.EVERY == 0:
            moments.zero_negligible_moments(self.optimizer)  # no subnormal moments (moments.py)
        self.state.bad_steps = 0
        return terms

    def _skip(self, message: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_steps += 1
        if self.ctx.is_main:
            console.LOGGER.warning(f"{message}; step skipped")
        if self.state.bad_steps >= self.cfg.max_bad_steps:
            raise TrainingDiverged(
                f"{self.state.bad_steps} non-finite steps in a row, last: {message}; "
                "lower train.lr, set train.grad_clip (e.g. 100), or check the data")
        return None

    def fit(self, train_x: torch.Tensor | Rows, epochs: int | None = None) -> TrainState:
        """Train for ``epochs`` (default ``cfg.epochs``) counting epochs already done;
        continues a loaded mid-epoch state from the batch where it stopped.

        ``train_x``: a tensor (N, ...) or a row store (``data/rows.py``: uint8 in memory,
        memory-mapped files, a torch Dataset), read batch by batch by row numbers.
        """
        epochs = self.cfg.epochs if epochs is None else epochs
        train_x = as_rows(train_x)
        n = len(train_x)
        steps_per_epoch = math.ceil(n / self.cfg.batch_size)
        limit = self.cfg.time_limit_minutes
        if limit > 0 and self.state.elapsed >= 60 * limit and self.state.batch == 0:
            # a finished run resumed: out of time before its next epoch
            self.stop_reason = f"time limit of {limit} minutes reached"
        while self.state.epoch < epochs and not self.stop_reason:
            record = self._run_epoch(train_x, steps_per_epoch, epochs)
            if not self.stop_reason and limit > 0 and self.state.elapsed >= 60 * limit:
                self.stop_reason = f"time limit of {limit} minutes reached"
            self.stop_reason = distributed.broadcast_object(self.stop_reason)  # rank 0 decides
            if self.stop_reason:
                if self.ctx.is_main:
                    console.LOGGER.info(f"stopping after epoch {record['epoch']}: "
                                        f"{self.stop_reason}")
                break
        return self.state

    def _local(self, batch: torch.Tensor) -> torch.Tensor | None:
        """This rank's rows of a global batch; a ragged last batch is cut to a multiple of
        the world size (None when fewer rows than processes remain)."""
        if isinstance(batch, tuple):  # (idx, xb): the same rows of each
            parts = [self._local(b) for b in batch]
            return None if parts[0] is None else tuple(parts)
        world = self.ctx.world
        if world == 1:
            return batch
        n = batch.shape[0] // world * world
        return batch[:n][Shard(self.ctx.rank, world).rows(n)] if n else None

    def _read(self, train_x: Rows, idx: torch.Tensor) -> Any:
        """This rank's rows of the global batch ``idx``: xb, or (local idx, xb) with
        ``with_indices``; None when fewer rows than processes remain."""
        local = self._local(idx)
        if local is None:
            return None
        xb = train_x.gather(local)
        return (local.to(xb.device), xb) if self.with_indices else xb

    def _checkpoint(self, is_best: bool) -> None:
        if self.save_checkpoint is not None and self.ctx.is_main:
            self.save_checkpoint(self, is_best)

    def _run_epoch(self, train_x: Rows, steps_per_epoch: int,
                   epochs: int) -> dict[str, Any]:
        self.module.train()
        st = self.state
        epoch = st.epoch
        if st.batch == 0:
            st.epoch_rng = self.generator.get_state()
            st.epoch_sums, st.epoch_seen, st.epoch_seconds, st.epoch_records = {}, 0, 0.0, []
        else:  # resumed mid-epoch: replay this epoch's permutation from its start
            assert st.epoch_rng is not None  # set with the epoch's first batch
            self.generator.set_state(st.epoch_rng)
        sums = st.epoch_sums
        hook_seconds = 0.0
        start = time.perf_counter()
        # a bar on a terminal only: the epoch's log line says the rest (console.py)
        bar = console.progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", initial=st.batch,
                               enabled=self.cfg.progress and self.ctx.is_main)
        # the global batch's row numbers; each rank cuts its slice first and reads only that
        batches = index_batches(len(train_x), self.cfg.batch_size, generator=self.generator,
                                start=st.batch, device=train_x.index_device)
        every = self.cfg.checkpoint_every_steps
        for i, idx in enumerate(batches, start=st.batch):
            progress = Progress(step=st.step, epoch=epoch + i / steps_per_epoch)
            local = self._read(train_x, idx)
            terms = self._step(local, progress) if local is not None else None
            if local is not None:
                st.step += 1
            st.batch += 1
            bar.update(1)
            if local is not None and terms is not None:  # (terms only when local)
                if self.on_step_end is not None:
                    t_hook = time.perf_counter()
                    extra = self.on_step_end(self, local, progress)
                    hook_seconds += time.perf_counter() - t_hook
                    if extra:
                        st.epoch_records.append(extra)
                if self.step_metrics is not None and self.ctx.is_main \
                        and st.step % max(self.cfg.log_every_steps, 1) == 0:
                    self.step_metrics(st.step, {k: v.detach().float().mean().item()
                                                for k, v in terms.items()})
                st.epoch_seen += (local[1] if self.with_indices else local).shape[0]
                for key, value in terms.items():
                    total = value.detach().sum()
                    sums[key] = sums[key] + total if key in sums else total
                if i % 25 == 0 and self.bar_term in sums:
                    mean = sums[self.bar_term].item() / st.epoch_seen
                    bar.set_postfix({self.bar_term: f"{mean:.2f}"})
            if every > 0 and local is not None and st.step % every == 0 \
                    and st.batch < steps_per_epoch:  # the epoch's end checkpoints anyway
                now = time.perf_counter()
                st.epoch_seconds += now - start - hook_seconds
                start, hook_seconds = now, 0.0
                self._merge_partial_sums()
                sums = st.epoch_sums
                self._checkpoint(False)
        bar.close()
        train_seconds = st.epoch_seconds + time.perf_counter() - start - hook_seconds
        st.elapsed += train_seconds  # hooks measure, they do not train
        self.scheduler.step()
        st.epoch += 1
        totals, seen = self._reduce_sums(sums, st.epoch_seen)
        record: dict[str, Any] = {"epoch": st.epoch, "step": st.step}
        record.update({f"train_{k}": v / max(seen, 1) for k, v in totals.items()})
        record["train_seconds"] = train_seconds
        record["images_per_sec"] = seen / train_seconds
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        if st.epoch_records:
            record["step_records"] = st.epoch_records
            record["hook_seconds"] = hook_seconds
        st.batch, st.epoch_rng, st.epoch_sums, st.epoch_seen = 0, None, {}, 0
        st.epoch_seconds, st.epoch_records = 0.0, []
        if self.validate_fn is not None:  # on every rank: keeps the random streams in step
            self.module.eval()
            record.update(self.validate_fn())
            self.module.train()
        record["wall_time"] = st.elapsed
        score = record.get(self.score_key) if self.score_key is not None else None
        improved = score is not None and score > st.best
        if score is not None and improved:
            st.best = score
        st.history.append(record)
        if self.ctx.is_main:
            console.LOGGER.info(f"epoch {st.epoch}/{epochs}: {self.epoch_line(record)}")
        if self.on_epoch_end is not None and self.ctx.is_main:
            self.on_epoch_end(self, record)
        self._checkpoint(improved or self.validate_fn is None or self.score_key is None)
        return record

    def _reduce_sums(self, sums: dict[str, torch.Tensor], seen: int
                     ) -> tuple[dict[str, float], int]:
        """Per-term sums and the datapoint count over all ranks."""
        keys = sorted(sums)
        packed = torch.stack([*(sums[k].double().cpu() for k in keys),
                              torch.tensor(float(seen), dtype=torch.float64)])
        packed = distributed.all_reduce_sum(packed)
        return {k: v.item() for k, v in zip(keys, packed[:-1], strict=True)}, \
            int(packed[-1].item())

    def _merge_partial_sums(self) -> None:
        """Before a mid-epoch checkpoint: rank 0 holds the epoch's sums over all ranks so
        far, the others restart from zero (so the saved partial metrics are complete)."""
        if not self.ctx.distributed:
            return
        st = self.state
        totals, seen = self._reduce_sums(st.epoch_sums, st.epoch_seen)
        if self.ctx.is_main:
            st.epoch_sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in totals.items()}
            st.epoch_seen = seen
        else:  # the same keys on every rank, so the epoch-end all-reduce lines up
            st.epoch_sums = {k: torch.zeros((), dtype=torch.float64) for k in totals}
            st.epoch_seen = 0
