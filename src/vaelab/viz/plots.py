"""Pictures of a run: samples, reconstructions, training curves (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from vaelab.models.hierarchical import HierarchicalVAE
    from vaelab.models.latent_space import Projection
    from vaelab.models.vae import VAE

# class labels of the plotted points (N,), or None for unlabelled data
Labels = torch.Tensor | Any | None


class NotApplicable(ValueError):
    """A picture that does not apply to this model or data; the message says why. The one
    way every plot function says so (``figures`` turns it into a skipped picture)."""


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` and close it (matplotlib keeps every open figure)."""
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def require_image(event_shape: tuple[int, ...]) -> None:
    if not is_image(event_shape):
        raise NotApplicable(f"not an image dataset (event shape {tuple(event_shape)}); "
                            "skipped")


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
    """The images as one grid filling the figure edge to edge: the figure takes the grid's
    own aspect ratio plus a strip for the title, so a wide 2 x 16 grid of reconstructions
    leaves no blank band above and below it."""
    grid = image_grid(images.detach().float().cpu(), ncols)
    width = 8.0
    image_h = width * grid.shape[0] / grid.shape[1]
    title_h = 0.35 if title else 0.0
    fig = plt.figure(figsize=(width, image_h + title_h))
    ax = fig.add_axes((0.0, 0.0, 1.0, image_h / (image_h + title_h)))
    ax.imshow(grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(),
              cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1 - 0.5 * title_h / (image_h + title_h), title, ha="center",
                 va="center", fontsize=11)
    return save_figure(fig, path)


def plot_samples(model: VAE, path: Path, n: int = 64) -> Path:
    require_image(model.event_shape)
    return save_grid(model.sample(n), path, ncols=8, title="samples: E[x|z], z ~ p(z)")


@torch.no_grad()
def plot_top_fixed(model: HierarchicalVAE, path: Path, rows: int = 8, cols: int = 8) -> Path:
    """Hierarchical model: row r holds one draw of the top layer z_L ~ p(z_L) fixed, its
    columns resample every layer below (``model.sample(top=...)``); a conditional model keeps
    one label per row too (row r: label r mod C), so only the lower layers change."""
    require_image(model.event_shape)
    top = model.prior().sample((rows,))  # (rows, d_L)
    labels = (torch.arange(rows) % model.classes).repeat_interleave(cols) \
        if getattr(model, "classes", 0) else None
    images = model.sample(rows * cols, top=top.repeat_interleave(cols, 0), labels=labels)
    return save_grid(images, path, ncols=cols,
                     title="each row: z_L fixed, lower layers resampled")


@torch.no_grad()
def plot_class_grid(model: HierarchicalVAE, path: Path, per_class: int = 10) -> Path:
    """Conditional model: row c is ``per_class`` samples E[x|z, y=c], z ~ p(z)."""
    require_image(model.event_shape)
    labels = torch.arange(model.classes).repeat_interleave(per_class)
    images = model.sample(labels.numel(), labels=labels)
    return save_grid(images, path, ncols=per_class, title="samples per label (one row each)")


def plot_reconstructions(model: VAE, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Rows of originals over their reconstructions."""
    require_image(model.event_shape)
    x = x[:n]
    both = torch.cat([x, model.reconstruct(x)])
    return save_grid(both, path, ncols=n, title="test images (top), reconstructions (bottom)")


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Train/validation bound, reconstruction and KL per epoch."""
    if not history:
        raise NotApplicable("no metrics.jsonl records in this run")
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
    return save_figure(fig, path)


# -- the latent space: scatter, prior grid, interpolation, KL per dimension, animation ------

def label_colors(labels: Labels, n: int) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """One colour per point: tab10/tab20 by class, or a single colour without labels."""
    import numpy as np

    if labels is None:
        return np.tile(np.array([[0.12, 0.47, 0.71, 1.0]]), (n, 1)), []
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20
                        else "viridis")
    if len(classes) <= 20:
        index = {c: i for i, c in enumerate(classes)}
        colors = np.array([cmap(index[v]) for v in labels.tolist()])
        legend = [(c, cmap(index[c])) for c in classes]
    else:
        lo, hi = labels.min(), labels.max()
        colors = cmap((labels - lo) / max(hi - lo, 1))
        legend = []
    return colors, legend


def _limits(points, margin: float = 0.08) -> tuple[float, float, float, float]:
    """Axis limits holding the central 99% of points (outliers do not shrink the cloud)."""
    import numpy as np

    lo = np.percentile(points, 0.5, axis=0)
    hi = np.percentile(points, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - margin * span, hi + margin * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _scatter_axes(ax, uv, colors, legend, projection, title: str) -> None:
    ax.scatter(uv[:, 0], uv[:, 1], c=colors, s=6, alpha=0.75, linewidths=0)
    x0, x1, y0, y1 = _limits(uv)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(projection.axis_labels[0])
    ax.set_ylabel(projection.axis_labels[1])
    ax.set_title(title)
    ax.grid(alpha=0.25)
    if legend:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=str(k))
                   for k, c in legend]
        ax.legend(handles=handles, title="label", fontsize=7, title_fontsize=8,
                  loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def plot_scatter(codes: torch.Tensor, labels: Labels, projection: Projection, path: Path,
                 title: str = "posterior means E_q[z|x] of test points") -> Path:
    """The approximate posterior: each test point's q(z|x) mean, projected, by label."""
    uv = projection(codes).numpy()
    colors, legend = label_colors(labels, uv.shape[0])
    fig, ax = plt.subplots(figsize=(6.6, 5.4))
    _scatter_axes(ax, uv, colors, legend, projection, title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_animation(frames: Sequence[tuple[int, Any, Labels]], path: Path,
                   projection: Projection, fps: int = 3, dpi: int = 70) -> Path:
    """A GIF of the posterior scatter over training; ``frames`` [(epoch, codes, labels)].

    One projection and fixed axes for every frame, so motion on screen is motion in z.
    """
    import numpy as np
    from matplotlib.animation import FuncAnimation, PillowWriter

    if not frames:
        raise NotApplicable("no posterior snapshots in this run; train with "
                            "train.snapshot_every=1 to record them")
    uvs = [projection(torch.as_tensor(codes)).numpy() for _, codes, _ in frames]
    colors, legend = label_colors(frames[-1][2], uvs[-1].shape[0])
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    _scatter_axes(ax, uvs[0], colors, legend, projection, "")
    x0, x1, y0, y1 = _limits(np.concatenate(uvs))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    points = ax.collections[0]
    fig.tight_layout()

    def draw(k: int):
        points.set_offsets(uvs[k])
        ax.set_title(f"q(z|x) means, epoch {frames[k][0]}")
        return (points,)

    animation = FuncAnimation(fig, draw, frames=len(frames), blit=False)
    animation.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    plt.close(fig)
    return path


def _image_rows(images: torch.Tensor, ncols: int):
    grid = image_grid(images.detach().float().cpu(), ncols)
    return grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy()


def _tick(v: float) -> str:
    return f"{0.0 if abs(v) < 5e-3 else v:.2f}"  # no "-0.00"


def plot_prior_grid(model: VAE, path: Path, values: torch.Tensor, codes: torch.Tensor,
                    axis_labels: tuple[str, str], title: str) -> Path:
    """Decoded E[x|z] on a grid of codes (rows of ``values.numel()``), axes labelled in z."""
    from vaelab.models.latent_space import decode_flat

    n = values.numel()
    images = decode_flat(model, codes)
    h, w = model.event_shape[1:]
    grid = _image_rows(images, ncols=n)
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * grid.shape[0] / grid.shape[1] + 0.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    centres = [1 + k * (w + 1) + w / 2 - 0.5 for k in range(n)]
    step = max(1, n // 8)
    ax.set_xticks(centres[::step], [_tick(v) for v in values.tolist()[::step]], fontsize=7)
    rows = codes.shape[0] // n
    if rows > 1:
        ycentres = [1 + k * (h + 1) + h / 2 - 0.5 for k in range(n)]
        ax.set_yticks(ycentres[::step], [_tick(v) for v in values.flip(0).tolist()[::step]],
                      fontsize=7)
        ax.set_ylabel(axis_labels[1])
    else:
        ax.set_yticks([])
    ax.set_xlabel(axis_labels[0])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_interpolation(model: VAE, x: torch.Tensor, path: Path, pairs: int = 3, steps: int = 10,
                       modes: tuple[str, ...] = ("linear", "slerp")) -> Path:
    """Rows: a test image, the decoded path between its code and the next image's, that image.

    Each pair gets one row per interpolation mode (linear, spherical).
    """
    from vaelab.models.latent_space import decode_flat, encode_means, interpolate

    pairs = min(pairs, x.shape[0] // 2)
    if pairs < 1:
        raise NotApplicable("interpolation needs at least two test images")
    codes = encode_means(model, x[: 2 * pairs])
    rows, names = [], []
    for k in range(pairs):
        a, b = codes[2 * k], codes[2 * k + 1]
        for mode in modes:
            path_images = decode_flat(model, interpolate(a, b, steps, mode))
            rows.append(torch.cat([x[2 * k: 2 * k + 1], path_images, x[2 * k + 1: 2 * k + 2]]))
            names.append(f"pair {k + 1}, {mode}")
    grid = _image_rows(torch.cat(rows), ncols=steps + 2)
    h = model.event_shape[1]
    fig, ax = plt.subplots(figsize=(9, 9 * grid.shape[0] / grid.shape[1] + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(names))], names, fontsize=7)
    ax.set_title("interpolation between encoded test images (ends: the images themselves)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_kl_per_dimension(values: torch.Tensor, stderr: torch.Tensor, kind: str, path: Path,
                          unit: str = "dimension", over: str = "") -> Path:
    """Bars of the mean KL per latent dimension (nats) with standard errors; ``over`` says
    which points the means are over (e.g. "10000 test points"), so the title's total can be
    compared with the evaluation's KL."""
    d = values.numel()
    fig, ax = plt.subplots(figsize=(max(5.0, min(14.0, 0.35 * d + 2)), 3.6))
    ax.bar(range(d), values.numpy(), yerr=stderr.numpy(), color="tab:blue", capsize=2)
    ax.set_xlabel(f"latent {unit}")
    ax.set_ylabel("KL, nats")
    where = f" over {over}" if over else ""
    what = (f"KL(q||p) per {unit}: sum {values.sum().item():.2f} nats = total KL{where}"
            if kind == "exact" else
            f"KL(q(z_d|x) || p(z_d)) between 1-D marginals, per {unit}{where}\n"
            "(with this posterior and prior they do not sum to the total KL)")
    ax.set_title(what, fontsize=9)
    if d <= 40:
        ax.set_xticks(range(d))
        ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_class_sweep(model: VAE, path: Path, variable: int = 0, rows: int = 8,
                     seed: int = 0) -> Path:
    """One categorical variable swept through its C classes, the others held fixed.

    Row r is a base code z ~ p(z) (Gumbel-max draws, seeded); column c sets variable
    ``variable`` to class c. The discrete analogue of the prior-predictive grid. Raises
    NotApplicable for non-categorical latents or non-image data.
    """
    from torch.distributions import OneHotCategorical

    from vaelab.models.discrete import base_of, gumbel_max

    if len(model.latent_shape) != 2:
        raise NotApplicable("the class sweep is for categorical latents")
    require_image(model.event_shape)
    n, c = model.latent_shape
    if not 0 <= variable < n:
        raise ValueError(f"variable must be in [0, {n}) for {n} categorical variables, "
                         f"got {variable}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prior = base_of(model.prior())
        if not isinstance(prior, OneHotCategorical):
            raise NotApplicable("the class sweep is for categorical latents")
        logits = prior.logits  # (N, C)
        codes = gumbel_max(logits, (rows,), generator=generator)  # (rows, N, C)
        codes = codes.unsqueeze(1).repeat(1, c, 1, 1)  # (rows, C, N, C)
        codes[:, :, variable, :] = torch.eye(c, dtype=codes.dtype)
        images = model.decode(codes.flatten(0, 1)).mean  # (rows * C, *event)
    return save_grid(images, path, ncols=c,
                     title=f"latent variable {variable}: classes 0..{c - 1} (columns); "
                           "other variables fixed per row, drawn from p(z)")


@torch.no_grad()
def plot_latent_2d(model: VAE, x: torch.Tensor, path: Path,
                   labels: torch.Tensor | None = None) -> Path:
    """Posterior means of ``x`` in a 2-D latent space with the prior's components drawn as
    2-sigma ellipses (darker = heavier weight); NotApplicable unless the latent is 2-D."""
    from matplotlib.patches import Ellipse

    from vaelab.evaluation.diagnostics import prior_components

    if tuple(model.latent_shape) != (2,):
        raise NotApplicable(f"the latent-prior picture needs a 2-D latent, not "
                            f"{tuple(model.latent_shape)}")

    means = torch.cat([model.encode(x[i: i + 500]).mean for i in range(0, x.shape[0], 500)])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    color = {"c": labels.numpy(), "cmap": "tab10"} if labels is not None else {"c": "tab:blue"}
    ax.scatter(means[:, 0].numpy(), means[:, 1].numpy(), s=3, alpha=0.5, **color)
    comps = prior_components(model.prior())
    if comps is not None:
        weights, centers, covs = comps
        top = weights.max().item()
        for w, m, cov in zip(weights, centers, covs, strict=True):
            vals, vecs = torch.linalg.eigh(cov.double())
            angle = math.degrees(math.atan2(vecs[1, 1].item(), vecs[0, 1].item()))
            width, height = (4 * vals.clamp(min=0).sqrt()).flip(0).tolist()
            ax.add_patch(Ellipse((m[0].item(), m[1].item()), width, height, angle=angle,
                                 fill=False, color="black", lw=1.2,
                                 alpha=0.2 + 0.8 * (w.item() / top)))
            ax.plot(m[0].item(), m[1].item(), "k+", ms=6)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"posterior means and the prior's {1 if comps is None else len(comps[0])} "
                 "component(s)")
    fig.tight_layout()
    return save_figure(fig, path)
