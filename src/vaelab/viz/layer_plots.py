"""Pictures of hierarchical and conditional runs: KL per layer over training, and test
images' codes decoded under every label (matplotlib, Agg backend via ``plots``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vaelab.models.hierarchical import HierarchicalVAE

from vaelab.viz.plots import NotApplicable, plt, require_image, save_figure, save_grid

_LAYER_KEY = re.compile(r"^(train|val)_kl_layer(\d+)$")


def layer_numbers(history: list[dict[str, Any]]) -> list[int]:
    """The latent layers (1 = bottom) with a per-layer KL record in ``history``."""
    found = {int(m.group(2)) for record in history for key in record
             if (m := _LAYER_KEY.match(key))}
    return sorted(found)


def plot_layer_kl(history: list[dict[str, Any]], path: Path) -> Path:
    """KL(q||p) of each latent layer per epoch (train solid, validation dashed), from the
    run's metrics.jsonl records ``train_kl_layerN``/``val_kl_layerN``; a second panel with
    the active units per layer where ``val_active_units_layerN`` were recorded."""
    layers = layer_numbers(history)
    if not layers:
        raise NotApplicable("does not apply: metrics.jsonl has no per-layer KL records "
                            "(kl_layerN; hierarchical runs write them every epoch)")
    units = any(f"val_active_units_layer{n}" in r for r in history for n in layers)
    fig, axes = plt.subplots(1, 2 if units else 1, figsize=(11 if units else 6.5, 3.8),
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for n in layers:
        for split, style in (("train", "-"), ("val", "--")):
            points = [(r["epoch"], r[f"{split}_kl_layer{n}"]) for r in history
                      if r.get(f"{split}_kl_layer{n}") is not None]
            if points:
                axes[0, 0].plot(*zip(*points, strict=True), style, color=colors(n - 1),
                                marker=".", label=f"z_{n} ({split})")
        if units:
            points = [(r["epoch"], r[f"val_active_units_layer{n}"]) for r in history
                      if r.get(f"val_active_units_layer{n}") is not None]
            if points:
                axes[0, 1].plot(*zip(*points, strict=True), "-", color=colors(n - 1),
                                marker=".", label=f"z_{n}")
    axes[0, 0].set_title("KL(q||p) per latent layer, nats (z_1 next to x)")
    if units:
        axes[0, 1].set_title("active units per layer (validation)")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@torch.no_grad()
def plot_relabel(model: HierarchicalVAE, x: torch.Tensor, path: Path) -> Path:
    """Conditional model: row i is test image i, then its code decoded under each label
    (``model.relabel``): the latent keeps the style, the label sets the class.
    ``x``: labelled rows (n, D + C)."""
    require_image(tuple(model.event_shape))
    decoded = model.relabel(x)  # (n, C, *event)
    originals = model.split(x)[0].unsqueeze(1)  # (n, 1, *event)
    images = torch.cat([originals, decoded], 1)
    return save_grid(images.flatten(0, 1), path, ncols=images.shape[1],
                     title="test image (left), its code decoded under labels 0, 1, ...")
