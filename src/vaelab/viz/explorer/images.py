"""Decoded tensors -> PNG data URIs for the browser (Pillow; no matplotlib on the hot path)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Values in [lo, hi] -> uint8 (clipped), rounded to the nearest level."""
    scaled = (x.detach().float() - lo) / max(hi - lo, 1e-12)
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def as_picture(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """One decoded datapoint -> an (H, W) or (H, W, 3) uint8 array.

    Images (C, H, W) with C in {1, 3} are shown as they are; any other event (a tabular
    vector, say) is laid out row by row in a near-square grey grid, one cell per value.
    """
    if x.dim() == 3 and x.shape[0] in (1, 3):
        pixels = to_uint8(x, lo, hi)
        return pixels[0] if x.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    flat = x.reshape(-1)
    cols = math.ceil(math.sqrt(flat.numel()))
    rows = math.ceil(flat.numel() / cols)
    grid = np.zeros(rows * cols, np.uint8)
    grid[: flat.numel()] = to_uint8(flat, lo, hi)
    return grid.reshape(rows, cols)


def strip(pictures: list[np.ndarray], gap: int = 1) -> np.ndarray:
    """Pictures side by side with ``gap`` white columns between them."""
    h = pictures[0].shape[0]
    sep_shape = (h, gap, *pictures[0].shape[2:])
    sep = np.full(sep_shape, 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, pic in enumerate(pictures):
        if i:
            parts.append(sep)
        parts.append(pic)
    return np.concatenate(parts, axis=1)


def png_data_uri(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
