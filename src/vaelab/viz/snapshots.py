"""Posterior snapshots during training: the encoded means of a fixed test subset per epoch.

``train.snapshot_every = N`` (N > 0) saves ``snapshots/epoch-XXXX.npz`` (``codes`` (M, D)
float32 flat posterior means, ``labels`` (M,) int64 or empty, ``epoch``) before training and
after every N-th epoch. The posterior animation is assembled from these files, so it shows
the approximate posterior moving from a round blob at the prior to separated classes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vaelab.models.latent_space import encode_means
from vaelab.models.vae import VAE
from vaelab.training.runs import atomic_write

SNAPSHOT_DIR = "snapshots"


class PosteriorSnapshots:
    """Saves a snapshot of q(z|x) means for a fixed subset ``x`` (the first M test points)."""

    def __init__(self, run_path: Path, x: torch.Tensor, y: torch.Tensor | None, every: int):
        self.dir = Path(run_path) / SNAPSHOT_DIR
        self.x = x
        self.y = y
        self.every = every

    def due(self, epoch: int) -> bool:
        return self.every > 0 and epoch % self.every == 0

    def save(self, model: VAE, epoch: int) -> Path:
        device = next(model.parameters()).device
        codes = encode_means(model, self.x.to(device)).float().cpu().numpy()
        labels = (self.y.numpy().astype(np.int64) if self.y is not None
                  else np.zeros(0, np.int64))
        buffer = io.BytesIO()
        np.savez(buffer, codes=codes, labels=labels, epoch=np.int64(epoch))
        path = self.dir / f"epoch-{epoch:04d}.npz"
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path


def load_snapshots(run_path: str | Path) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """(epoch, codes (M, D), labels (M,) or None) for every snapshot, by epoch."""
    out = []
    for path in sorted((Path(run_path) / SNAPSHOT_DIR).glob("epoch-*.npz")):
        with np.load(path, allow_pickle=False) as data:
            labels = data["labels"]
            out.append((int(data["epoch"]), data["codes"],
                        labels if labels.size else None))
    out.sort(key=lambda item: item[0])
    return out
