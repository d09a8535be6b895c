"""Schedules over training, read from :class:`Progress`: the KL weight (beta with linear
warm-up) and the relaxation temperature (constant, or annealed as in Jang et al. 2017).

Temperature:
tau(step) = max(tau_min, tau0 * exp(-rate * s)), where s is ``step`` rounded down to a
multiple of ``every`` (the temperature is updated every ``every`` optimizer steps).
``rate = 0`` gives the constant tau0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from vaelab.config import ObjectiveConfig


@dataclass(frozen=True)
class Progress:
    """Where training is when a step runs: schedules (KL warm-up, temperature) read it."""

    step: int  # optimizer steps completed before this one
    epoch: float  # fractional epochs completed, e.g. 2.5 halfway through the third


def kl_weight(cfg: ObjectiveConfig, progress: Progress) -> float:
    """beta, linearly warmed up from 0 over ``warmup_epochs``."""
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, progress.epoch / cfg.warmup_epochs)


class TemperatureWarning(UserWarning):
    """The annealing schedule does not do what the config suggests (e.g. never hits tau_min)."""


@dataclass(frozen=True)
class TemperatureSchedule:
    tau0: float = 1.0  # starting temperature
    tau_min: float = 0.5  # floor reached by annealing
    rate: float = 0.0  # r per optimizer step; 0 = constant tau0
    every: int = 1000  # steps between updates

    def __post_init__(self) -> None:
        if not self.tau0 > 0 or not math.isfinite(self.tau0):
            raise ValueError(f"temperature tau0 must be a positive number, got {self.tau0}")
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError(f"temperature rate must be >= 0, got {self.rate}")
        if self.every < 1:
            raise ValueError(f"temperature update interval must be >= 1 step, got {self.every}")
        if self.annealed and not self.tau_min > 0:
            raise ValueError(f"temperature floor tau_min must be > 0, got {self.tau_min}")
        if self.annealed and self.tau_min > self.tau0:
            raise ValueError(f"temperature floor tau_min={self.tau_min} exceeds the starting "
                             f"temperature tau0={self.tau0}; annealing would never start")

    @property
    def annealed(self) -> bool:
        return self.rate > 0

    def at(self, step: int) -> float:
        """The temperature used by the optimizer step ``step`` (0-based)."""
        if not self.annealed:
            return self.tau0
        updated = (step // self.every) * self.every
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * updated))

    def describe(self) -> str:
        if not self.annealed:
            return f"tau = {self.tau0:g} (constant)"
        return (f"tau = max({self.tau_min:g}, {self.tau0:g} exp(-{self.rate:g} step)), "
                f"updated every {self.every} steps")

    def steps_to_floor(self) -> int | None:
        """First step at which tau = tau_min (None when constant)."""
        if not self.annealed:
            return None
        raw = math.log(self.tau0 / self.tau_min) / self.rate
        return math.ceil(raw / self.every) * self.every

    def check_reaches_floor(self, total_steps: int, what: str = "training") -> None:
        """Warn when an annealed schedule stops above tau_min after ``total_steps`` steps."""
        needed = self.steps_to_floor()
        if needed is None or total_steps <= 0:
            return
        last = self.at(total_steps - 1)
        if last <= self.tau_min:
            return
        last_update = ((total_steps - 1) // self.every) * self.every
        if last_update == 0:
            fix = (f"tau is never updated: set objective.temperature_every below {total_steps} "
                   "(and a matching objective.temperature_rate) or train longer")
        else:
            rate = math.log(self.tau0 / self.tau_min) / last_update
            fix = f"raise objective.temperature_rate to at least {rate:.3g} or train longer"
        warnings.warn(
            f"temperature annealing never reaches temperature_min={self.tau_min} within "
            f"{what}: {total_steps} steps end at tau={last:.3g}, the floor needs {needed} "
            f"steps; {fix}", TemperatureWarning, stacklevel=2)
