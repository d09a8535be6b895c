"""Pictures of a run: samples, reconstructions, training curves (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def is_image(event_shape: tuple[int, ...]) -> bool:
    return len(event_shape) == 3 and event_shape[0] in (1, 3)


def image_grid(images: torch.Tensor, ncols: int) -> torch.Tensor:
    """(N, C, H, W) in [0,1] -> one (H', W', C) array with 1-pixel gaps."""
    n, c, h, w = images.shape
    nrows = math.ceil(n / ncols)
    grid = torch.ones(c, nrows * (h + 1) + 1, ncols * (w + 1) + 1)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] \
            = images[i]
    return grid.permute(1, 2, 0).clamp(0, 1)


def save_grid(images: torch.Tensor, path: Path, ncols: int, title: str = "") -> Path:
    grid = image_grid(images.detach().float().cpu(), ncols)
    height = max(2.0, 8 * grid.shape[0] / grid.shape[1])
    fig, ax = plt.subplots(figsize=(8, height))
    ax.imshow(grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(),
              cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_samples(model, path: Path, n: int = 64) -> Path | None:
    if not is_image(model.event_shape):
        return None
    return save_grid(model.sample(n), path, ncols=8, title="samples: E[x|z], z ~ p(z)")


def plot_reconstructions(model, x: torch.Tensor, path: Path, n: int = 16) -> Path | None:
    """Rows of originals over their reconstructions."""
    if not is_image(model.event_shape):
        return None
    x = x[:n]
    both = torch.cat([x, model.reconstruct(x)])
    return save_grid(both, path, ncols=n, title="test images (top), reconstructions (bottom)")


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train/validation bound, reconstruction and KL per epoch."""
    if not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("bound", "rec", "kl"),
                              ("bound (ELBO), nats", "E_q log p(x|z), nats",
                               "KL(q||p), nats"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            values = [r.get(f"{split}_{key}") for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_class_sweep(model, path: Path, variable: int = 0, rows: int = 8,
                     seed: int = 0) -> Path | None:
    """One categorical variable swept through its C classes, the others held fixed.

    Row r is a base code z ~ p(z) (Gumbel-max draws, seeded); column c sets variable
    ``variable`` to class c. The discrete analogue of the prior-predictive grid. Returns
    None for non-categorical latents or non-image data.
    """
    from vaelab.discrete import base_of, gumbel_max

    if len(model.latent_shape) != 2 or not is_image(model.event_shape):
        return None
    n, c = model.latent_shape
    if not 0 <= variable < n:
        raise ValueError(f"variable must be in [0, {n}) for {n} categorical variables, "
                         f"got {variable}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = base_of(model.prior()).logits  # (N, C)
        codes = gumbel_max(logits, (rows,), generator=generator)  # (rows, N, C)
        codes = codes.unsqueeze(1).repeat(1, c, 1, 1)  # (rows, C, N, C)
        codes[:, :, variable, :] = torch.eye(c, dtype=codes.dtype)
        images = model.decode(codes.flatten(0, 1)).mean  # (rows * C, *event)
    return save_grid(images, path, ncols=c,
                     title=f"latent variable {variable}: classes 0..{c - 1} (columns); "
                           "other variables fixed per row, drawn from p(z)")
