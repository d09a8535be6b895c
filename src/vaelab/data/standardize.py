"""Per-column standardisation of a table, fitted on the training split, undone for samples.

A tabular VAE with a Gaussian likelihood trains on ``(x - mean) / std`` per column, so
columns in thousands and in hundredths weigh alike; the run records mean and std
(meta.json ``data.standardize``), and ``Run.sample``/``Run.reconstruct`` map the model's
outputs back with ``x * std + mean``, in the table's own units. A constant column (std 0)
is only centred (std recorded as 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DataError


@dataclass(frozen=True)
class Standardization:
    """Column means and stds, each (D,) float64, of the rows they were fitted on."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardization:
        """Means and (population) stds of the columns of ``x`` (N, D); std 0 becomes 1."""
        x = np.asarray(x, dtype=np.float64)
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0), std=np.where(std > 0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std, float64 (N, D) in, float64 out."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs (..., D) back in the original units: x * std + mean (x's dtype)."""
        mean = torch.as_tensor(self.mean, dtype=torch.float64, device=x.device)
        std = torch.as_tensor(self.std, dtype=torch.float64, device=x.device)
        return (x.double() * std + mean).to(x.dtype)

    def record(self, columns: list[str]) -> dict[str, Any]:
        """The JSON record a run keeps (meta.json ``data.standardize``)."""
        return {"columns": columns, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_record(cls, record: dict[str, Any], what: str) -> Standardization:
        """Back from :meth:`record`; DataError naming ``what`` (the file) if it is damaged."""
        try:
            mean = np.asarray(record["mean"], dtype=np.float64)
            std = np.asarray(record["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            mean = std = np.zeros(0)
        if mean.ndim != 1 or mean.size == 0 or mean.shape != std.shape \
                or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError(f"{what}: data.standardize has no valid column means and stds; the "
                            f"file was edited or damaged")
        return cls(mean=mean, std=std)
