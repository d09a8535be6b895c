"""Which GEMM library a run's linear layers multiply on: ``train.matmul``.

``auto`` (the default) times oneDNN's and torch's own GEMM on the products one training step
of this model makes (``models/fastlinear.py`` says why the answer differs from machine to
machine) and keeps the faster. The choice is written into the run's config, so resuming
the run, evaluating it and every data-parallel rank (rank 0 decides) use the same library
and the same float32 rounding.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from vaelab import console
from vaelab.config import Config
from vaelab.models import fastlinear
from vaelab.training import distributed


def choose_matmul(config: Config, model: nn.Module, ctx: distributed.Context, *,
                  rows: int, samples: int = 1) -> fastlinear.Matmul:
    """``config.train.matmul`` as a library: ``auto`` resolved by timing (on rank 0) the
    products of ``rows`` datapoints in the encoder and ``rows * samples`` in the decoder.
    Where oneDNN's route cannot apply (not the CPU, bf16 autocast, torch.compile) the
    answer is torch without timing."""
    setting = config.train.matmul
    if setting != "auto":
        return setting
    if ctx.device.type != "cpu" or config.train.precision != "float32" or config.train.compile:
        return "torch"

    def decide() -> fastlinear.Matmul:
        decoder = getattr(model, "decoder", None)
        shapes = fastlinear.product_shapes(model, rows, rows * samples, decoder)
        choice, timings = fastlinear.fastest_matmul(shapes)
        if timings:
            console.LOGGER.info(
                f"train.matmul=auto: {choice} (one step's {3 * len(shapes)} products: "
                f"oneDNN {1e3 * timings['onednn']:.2f} ms, torch {1e3 * timings['torch']:.2f} ms)")
        return choice

    return distributed.broadcast_object(decide() if ctx.is_main else None)


def use_matmul(config: Config, model: nn.Module, matmul: fastlinear.Matmul) -> Config:
    """Set ``model``'s linear layers to ``matmul``; the config recording it."""
    fastlinear.set_matmul(model, matmul)
    if config.train.matmul == matmul:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, matmul=matmul))


def resolve_matmul(config: Config, model: nn.Module, *, rows: int, samples: int = 1,
                   ctx: distributed.Context | None = None) -> Config:
    """:func:`choose_matmul` then :func:`use_matmul`: what ``vaelab.fit`` and ``load_run``
    do, and what code that builds a model itself (``build_model``) calls before training."""
    ctx = ctx or distributed.Context()
    return use_matmul(config, model, choose_matmul(config, model, ctx, rows=rows,
                                                   samples=samples))
