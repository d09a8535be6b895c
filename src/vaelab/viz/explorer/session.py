"""The explorer's models: loaded once, with strict checks on every latent a client sends.

A :class:`LoadedModel` wraps one run: the encoded test subset and its 2-D projection (the
``info`` payload), and ``decode`` / ``interpolate`` under ``torch.no_grad`` and a lock, so
concurrent requests never interleave inside one model. Anything malformed raises
:class:`BadRequest` with a message the client can show.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.models.latent_space import (
    decode_flat,
    encode_means,
    fit_projection,
    interpolate,
    is_categorical_model,
    is_discrete_model,
)
from vaelab.viz.explorer.images import as_picture, png_data_uri, strip

LIMIT = 10.0  # largest |z_d| accepted for continuous latents (the prior has ~0 mass beyond)
MAX_STEPS = 32  # largest interpolation strip
SUM_TOLERANCE = 1e-3  # categorical codes: each variable's probabilities must sum to 1


class BadRequest(ValueError):
    """A request the explorer refuses (HTTP 400); the message says what to send instead."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where} must be a number, got {type(value).__name__} {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        raise BadRequest(f"{where} is too large") from None
    if not math.isfinite(number):
        raise BadRequest(f"{where} must be finite, got {number}")
    return number


def _integer(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where} must be an integer in {lo}..{hi}, got {value!r:.40}")
    if not lo <= value <= hi:
        raise BadRequest(f"{where} must be in {lo}..{hi}, got {value}")
    return value


@dataclass
class LoadedModel:
    """One run in the explorer."""

    name: str
    run: Any  # vaelab.api.Run
    points: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from vaelab.data.prepare import eval_split, load_split, prepare_eval_x

        cfg = self.run.config
        model = self.run.model.eval()
        self.model = model
        self.flat_dim = model.posterior.flat_dim
        self.discrete = is_discrete_model(model)
        self.categorical = is_categorical_model(model)
        self.split = eval_split(cfg)
        data = load_split(cfg, self.split)
        x = prepare_eval_x(cfg, data)[: self.points]
        self.value_range = (0.0, 1.0) if float(x.min()) >= 0 and float(x.max()) <= 1 \
            else (float(x.min()), float(x.max()))
        self.codes = encode_means(model, x)  # on the model's device, returned on the CPU
        self.labels = None if data.y is None else data.y[: x.shape[0]].tolist()
        self.projection = fit_projection(self.codes)
        self._info = self._make_info()

    # -- the info payload ------------------------------------------------------------------
    def _make_info(self) -> dict[str, Any]:
        cfg = self.run.config
        uv = self.projection(self.codes)
        shape = list(self.model.latent_shape)
        return {
            "run": self.name,
            "family": cfg.model.latent,
            "prior": cfg.model.prior,
            "discrete": self.discrete,
            "categorical": self.categorical,
            "latent_shape": shape,
            "flat_dim": self.flat_dim,
            "num_classes": shape[1] if self.categorical else None,
            "event_shape": list(self.model.event_shape),
            "is_image": len(self.model.event_shape) == 3,
            "limit": LIMIT,
            "max_steps": MAX_STEPS,
            "dataset": dataset_label(cfg.data.name),
            "split": self.split,
            "projection": {"kind": self.projection.kind,
                           "center": _rounded(self.projection.center),
                           "basis": _rounded(self.projection.basis),
                           "axis_labels": list(self.projection.axis_labels)},
            "points": _rounded(uv),
            "codes": _rounded(self.codes),
            "labels": self.labels,
        }

    def info(self) -> dict[str, Any]:
        return self._info

    # -- validation ------------------------------------------------------------------------
    def latent(self, value: Any, where: str = "z") -> torch.Tensor:
        """A client's flat latent -> (flat_dim,) tensor, or BadRequest saying what is wrong."""
        if not isinstance(value, list):
            raise BadRequest(f"{where} must be a list of {self.flat_dim} numbers")
        if len(value) != self.flat_dim:
            raise BadRequest(f"{where} must have {self.flat_dim} numbers (the flat latent of "
                             f"run '{self.name}'), got {len(value)}")
        numbers = [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]
        z = torch.tensor(numbers, dtype=torch.float32)
        if self.discrete:
            bad = ((z < 0) | (z > 1)).nonzero()
            if bad.numel():
                i = int(bad[0, 0])
                raise BadRequest(f"{where}[{i}] = {numbers[i]} is not a probability; "
                                 f"{self.run.config.model.latent} codes lie in [0, 1]")
            if self.categorical:
                sums = z.reshape(self.model.latent_shape).sum(-1)
                off = ((sums - 1).abs() > SUM_TOLERANCE).nonzero()
                if off.numel():
                    k = int(off[0, 0])
                    raise BadRequest(f"{where}: the probabilities of variable {k} sum to "
                                     f"{float(sums[k]):.4f}, not 1")
        else:
            big = (z.abs() > LIMIT).nonzero()
            if big.numel():
                i = int(big[0, 0])
                raise BadRequest(f"{where}[{i}] = {numbers[i]:.4g} is outside "
                                 f"[-{LIMIT:g}, {LIMIT:g}]")
        return z

    # -- decoding --------------------------------------------------------------------------
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        with self.lock, torch.no_grad():
            return decode_flat(self.model, codes)

    def picture(self, x: torch.Tensor) -> np.ndarray:
        return as_picture(x, *self.value_range)

    def decode(self, body: dict[str, Any]) -> dict[str, Any]:
        z = self.latent(body.get("z"), "z")
        start = time.perf_counter()
        x = self._decode(z[None])[0]
        decode_ms = 1000 * (time.perf_counter() - start)
        out: dict[str, Any] = {"image": png_data_uri(self.picture(x)),
                               "decode_ms": round(decode_ms, 3)}
        if len(self.model.event_shape) != 3:
            out["values"] = _rounded(x.reshape(-1))
        return out

    def interpolate(self, body: dict[str, Any]) -> dict[str, Any]:
        a = self.latent(body.get("a"), "a")
        b = self.latent(body.get("b"), "b")
        steps = _integer(body.get("steps", 8), "steps", 2, MAX_STEPS)
        mode = body.get("mode", "linear")
        if mode not in ("linear", "slerp"):
            raise BadRequest(f"mode must be 'linear' or 'slerp', got {mode!r:.40}")
        if mode == "slerp" and self.discrete:
            raise BadRequest("mode 'slerp' is for continuous latents; use 'linear'")
        codes = interpolate(a, b, steps, mode)
        images = self._decode(codes)
        return {"image": png_data_uri(strip([self.picture(x) for x in images])),
                "steps": steps, "mode": mode}


def _rounded(t: torch.Tensor, digits: int = 4):
    return torch.round(t.detach().double(), decimals=digits).tolist()


def dataset_label(name: str) -> str:
    """How the page names the data: a built-in name as is, a file by its name only (the
    page need not show, nor a screenshot leak, the folders of the machine it runs on)."""
    return Path(name).name if ("/" in name or "\\" in name) else name
