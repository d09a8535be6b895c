"""Training modes: where q(z|x) comes from inside a training step (``train.inference``).

* ``amortized`` (default): q = family(encoder(x)), trained jointly with the decoder.
* ``semi-amortized`` (Kim et al. 2018): lambda_0 = encoder(x), then ``train.refine_steps``
  SGD steps on each datapoint's ELBO give lambda_k; the decoder trains on the ELBO at
  lambda_k. With ``train.refine_through`` the encoder trains on that same loss,
  backpropagated through the unrolled steps; without it the encoder trains on its own ELBO
  at lambda_0 (with the decoder's gradient from lambda_k only).
* ``mean-field`` (seeds 001 and 004: variational EM): one free lambda_i per training
  datapoint, no encoder. Each step is an E-step (``train.mean_field_steps`` Adam steps on
  the batch's lambdas, warm-started from the table) then an M-step (one optimizer step of
  the decoder and prior at the refined lambdas). Only for data small enough to hold a
  table: at most ``train.mean_field_max`` points (use ``data.train_limit``).
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch
from torch import nn

from vaelab.config import Config, ConfigError, InferenceName
from vaelab.inference.objectives import ObjectiveOutput
from vaelab.inference.refine import PerDatapointParams, check_table_family, refine, with_params
from vaelab.models.vae import VAE
from vaelab.schedules import Progress

MODES = typing.get_args(InferenceName)  # ("amortized", "semi-amortized", "mean-field")
Prepare = Callable[[torch.Tensor], torch.Tensor]
# the configured objective (build.ConfiguredObjective): (model, x, progress) -> ObjectiveOutput
ModeObjective = Callable[[VAE, torch.Tensor, Progress], ObjectiveOutput]
# one training step: (batch, progress) -> (loss, per-datapoint metrics), as the trainer calls it
StepFn = Callable[[typing.Any, Progress], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def check_mode(config: Config, n_train: int, world: int = 1) -> str:
    """The train.inference rules between fields, for a training split of ``n_train`` points
    (each field's own range is config.py's; ``build.validate`` calls this with n_train=0)."""
    t = config.train
    if t.inference == "amortized":
        return t.inference
    if world > 1:
        raise ConfigError(f"train.inference={t.inference} runs in one process; launch without "
                          "torchrun or use train.inference=amortized")
    if t.grad_variance_every > 0:
        raise ConfigError(f"train.grad_variance_every measures the amortized estimator; set it "
                          f"to 0 with train.inference={t.inference}")
    if t.inference == "semi-amortized":
        if t.refine_through and t.compile:
            raise ConfigError("train.refine_through=true differentiates gradients (double "
                              "backward), which torch.compile does not support; set "
                              "train.compile=false or train.refine_through=false")
    elif n_train > t.mean_field_max:
        raise ConfigError(
            f"train.inference=mean-field keeps one lambda per training point, but the "
            f"training split has {n_train} > train.mean_field_max={t.mean_field_max}; "
            f"train on a subset (data.train_limit={t.mean_field_max}), raise "
            "train.mean_field_max, or use train.inference=amortized")
    return t.inference


class SemiAmortized:
    """The semi-amortized step; it keeps no state of its own."""

    with_indices = False
    validates = True  # the encoder exists, so the usual validation ELBO is meaningful
    state: nn.Module | None = None

    def __init__(self, config: Config, model: VAE, objective: ModeObjective):
        check_table_family(model.posterior)
        self.t, self.model, self.objective = config.train, model, objective

    def step_fn(self, prepare: Prepare) -> StepFn:
        t, model, objective = self.t, self.model, self.objective

        def step(batch: torch.Tensor, progress: Progress):
            x = prepare(batch)
            lam0 = model.encoder(x)  # (B, P)

            def bound(m: VAE, xb: torch.Tensor):
                return objective(m, xb, progress)

            res = refine(model, x, lam0 if t.refine_through else lam0.detach(),
                         steps=t.refine_steps, lr=t.refine_lr, objective=bound, method="sgd",
                         differentiable=t.refine_through, clip=t.refine_clip,
                         evaluate_last=False)
            out = objective(with_params(model, res.params), x, progress)
            loss = out.loss
            if not t.refine_through:
                # the encoder's own objective at lambda_0 with the decoder held fixed: its
                # gradient is d loss/d lambda_0 (the first refinement gradient) . d lambda_0
                # / d phi; value 0, so the logged loss stays the refined one
                surrogate = (res.first_grad * lam0).sum() / x.shape[0]
                loss = loss + surrogate - surrogate.detach()
            terms = out.metrics()
            terms["amortized_bound"] = res.trace[0]  # the bound at lambda_0, for the gap
            return loss, terms

        return step


class MeanField:
    """Variational EM with a table of per-datapoint parameters; ``state`` (the table) is
    checkpointed with the run."""

    with_indices = True
    validates = False  # no encoder: a validation ELBO would need BBVI on every epoch

    def __init__(self, config: Config, model: VAE, objective: ModeObjective, n_train: int):
        self.t, self.model, self.objective = config.train, model, objective
        self.table = PerDatapointParams(model.posterior, n_train, init="prior")
        self.table.params.requires_grad_(False)  # updated by the E-step, not the optimizer
        self.state: nn.Module | None = self.table

    def step_fn(self, prepare: Prepare) -> StepFn:
        t, model, objective, table = self.t, self.model, self.objective, self.table

        def step(batch: tuple[torch.Tensor, torch.Tensor], progress: Progress):
            idx, xb = batch
            x = prepare(xb)

            def bound(m: VAE, xs: torch.Tensor):
                return objective(m, xs, progress)

            # E-step: Adam on this batch's lambdas, warm-started, annealed to lr/20
            res = refine(model, x, table.params[idx], steps=t.mean_field_steps,
                         lr=t.mean_field_lr, lr_final=t.mean_field_lr / 20, objective=bound,
                         evaluate_last=False)
            table.assign(idx, res.params)
            # M-step: the optimizer's step on the decoder and prior at the refined lambdas
            out = objective(with_params(model, res.params), x, progress)
            return out.loss, out.metrics()

        return step


def build_mode(config: Config, model: VAE, objective: ModeObjective, n_train: int,
               world: int = 1) -> SemiAmortized | MeanField | None:
    """The training mode's step builder, or None for amortized training."""
    mode = check_mode(config, n_train, world)
    if mode != "amortized" and not isinstance(model, VAE):
        raise ConfigError(f"train.inference={mode} refines a one-layer q(z|x), but this model "
                          f"is {type(model).__name__} (model.latent_layers); set "
                          "train.inference=amortized")
    if mode == "semi-amortized":
        return SemiAmortized(config, model, objective)
    if mode == "mean-field":
        return MeanField(config, model, objective, n_train)
    return None
