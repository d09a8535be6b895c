"""Every picture of a run: which apply to its latent family and data, and where they go.

``render(run, kinds, out_dir)`` draws each requested kind with ``vaelab.viz.plots`` and returns
one :class:`Figure` per kind: the file written, or the one-line reason it does not apply
(a prior grid for categorical latents, an image grid for tabular data, ...). Nothing here
raises for a picture that merely does not apply, so ``--what all`` works on any run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.latent_space import (
    encode_means,
    fit_projection,
    grid_codes,
    grid_values,
    is_categorical_model,
    is_discrete_model,
)
from vaelab.viz import plots
from vaelab.viz.catalog import FILENAMES, PICTURES

if TYPE_CHECKING:  # annotations only: api.py sits above viz/
    from vaelab.api import Run
    from vaelab.data import ArrayDataset

KINDS = tuple(PICTURES)
# what `vaelab train` draws at the end of a run (all of them, cheap ones first)
TRAIN_KINDS = ("samples", "reconstructions", "curves", "scatter", "grid", "interpolation",
               "kl", "sweep", "animation", "layers", "classes", "kl_layers", "relabel")


@dataclass
class Figure:
    kind: str
    path: Path | None  # the file written, or None when skipped
    note: str = ""  # why it was skipped


@dataclass
class Options:
    dims: tuple[int, int] | None = None  # two latent dimensions for scatter, animation, grid
    grid_kind: str = "linear"  # linear over [-limit, limit], or Gaussian quantiles
    grid_limit: float = 3.0  # half-width of the linear grid
    n: int | None = None  # size: grid points per axis, samples, images, interpolation steps
    points: int = 2000  # test points in the scatter
    extra: dict = field(default_factory=dict)


def parse_kinds(text: str) -> list[str]:
    """``"scatter,grid"`` or ``"all"`` -> kinds, with a clear error for unknown names."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or names == ["all"]:
        return list(KINDS)
    unknown = [t for t in names if t not in KINDS]
    if unknown:
        raise ValueError(f"--what: unknown picture '{unknown[0]}'; choose from "
                         f"{', '.join(KINDS)} or all")
    return names


def parse_dims(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, j = (int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--dims must be two latent indices like 0,1, got '{text}'") from None
    return i, j


class RunPictures:
    """A run plus the evaluation data the pictures need, loaded once and only if needed."""

    def __init__(self, run: Run, options: Options | None = None):
        self.run = run
        self.model = run.model
        self.options = options or Options()

    @cached_property
    def split(self) -> str:
        from vaelab.data.prepare import eval_split

        return eval_split(self.run.config)

    @cached_property
    def dataset(self) -> ArrayDataset:
        from vaelab.data.prepare import load_split

        return load_split(self.run.config, self.split)

    @cached_property
    def x(self) -> torch.Tensor:
        from vaelab.data.prepare import prepare_eval_x
        from vaelab.models.latent_space import model_device

        return prepare_eval_x(self.run.config, self.dataset).to(model_device(self.model))

    @property
    def y(self) -> torch.Tensor | None:
        return self.dataset.y

    @cached_property
    def codes(self) -> torch.Tensor:
        return encode_means(self.model, self.x[: self.options.points])

    @property
    def image(self) -> bool:
        return plots.is_image(tuple(self.model.event_shape))

    def require_image(self) -> None:
        plots.require_image(tuple(self.model.event_shape))

    # -- one method per kind ---------------------------------------------------------------
    def scatter(self, path: Path) -> Path:
        projection = fit_projection(self.codes, self.options.dims)
        labels = None if self.y is None else self.y[: self.codes.shape[0]].numpy()
        family = self.run.config.model.latent
        what = "class probabilities" if is_discrete_model(self.model) else "means"
        how = {"direct": "", "dims": "", "pca": ", PCA"}[projection.kind]
        title = f"q(z|x) {what} of {self.codes.shape[0]} {self.split} points ({family}{how})"
        return plots.plot_scatter(self.codes, labels, projection, path, title=title)

    def animation(self, path: Path) -> Path:
        from vaelab.viz.snapshots import load_snapshots

        frames = load_snapshots(self.run.path)
        if not frames:
            raise plots.NotApplicable("no posterior snapshots in this run; train with "
                                      "train.snapshot_every=1 to record them")
        projection = fit_projection(torch.as_tensor(frames[-1][1]), self.options.dims)
        return plots.plot_animation(frames, path, projection)

    def grid(self, path: Path) -> Path:
        self.require_image()
        family = self.run.config.model.latent
        if is_discrete_model(self.model):
            hint = "; see --what sweep" if is_categorical_model(self.model) else ""
            raise plots.NotApplicable(f"a prior grid needs a continuous latent, not "
                                      f"'{family}'{hint}")
        opts = self.options
        n = opts.n or 15
        values = grid_values(n, opts.grid_kind, opts.grid_limit)
        dim = self.model.posterior.flat_dim
        if dim == 1:
            codes, labels = values[:, None], ("z[0]", "")
        else:
            dims = opts.dims or (0, 1)
            if not all(0 <= d < dim for d in dims) or dims[0] == dims[1]:
                raise ValueError(f"--dims {dims[0]},{dims[1]} must be two different latent "
                                 f"dimensions in 0..{dim - 1}")
            codes, labels = grid_codes(dim, values, dims), (f"z[{dims[0]}]", f"z[{dims[1]}]")
        spacing = (f"equally spaced over [-{opts.grid_limit:g}, {opts.grid_limit:g}]"
                   if opts.grid_kind == "linear" else "at N(0,1) quantiles (i+1/2)/n")
        rest = ", other dimensions 0" if dim > 2 else ""
        prior = self.run.config.model.prior
        prior_note = f"; prior: {prior}" if prior not in ("auto", "normal") else ""
        title = f"E[x|z] with z {spacing}{rest}{prior_note}"
        return plots.plot_prior_grid(self.model, path, values, codes, labels, title)

    def interpolation(self, path: Path) -> Path:
        self.require_image()
        modes = ("linear",) if is_discrete_model(self.model) else ("linear", "slerp")
        return plots.plot_interpolation(self.model, self.x[:6], path, pairs=3,
                                        steps=self.options.n or 10, modes=modes)

    def samples(self, path: Path) -> Path:
        self.require_image()
        return plots.plot_samples(self.model, path, n=self.options.n or 64)

    def reconstructions(self, path: Path) -> Path:
        self.require_image()
        return plots.plot_reconstructions(self.model, self.x, path, n=self.options.n or 16)

    def curves(self, path: Path) -> Path:
        from vaelab.training.runs import RunDir

        history = RunDir(self.run.path).read_metrics()
        if not history:
            raise plots.NotApplicable("no metrics.jsonl records in this run")
        return plots.plot_curves(history, path)

    def kl(self, path: Path) -> Path:
        from vaelab.evaluation.diagnostics import kl_per_dimension

        # the whole evaluation split (eval.limit as for the evaluation), so the title's
        # total is the evaluation's KL: the same points, not the scatter's subset
        limit = self.run.config.eval.limit
        x = self.x[:limit] if limit else self.x
        mc_points = 1000  # against a mixture prior: Monte Carlo over the first points
        split = kl_per_dimension(self.model, x, mc_points=mc_points)
        if split is None:
            raise plots.NotApplicable(f"no per-dimension KL for a "
                                      f"{self.run.config.model.latent} posterior with the "
                                      f"{self.run.config.model.prior} prior")
        values, stderr, kind = split
        unit = "variable" if is_discrete_model(self.model) else "dimension"
        from torch.distributions import MixtureSameFamily

        mixture = isinstance(self.model.prior(), MixtureSameFamily)
        n = min(x.shape[0], mc_points) if mixture else x.shape[0]
        return plots.plot_kl_per_dimension(values, stderr, kind, path, unit=unit,
                                           over=f"{n} {self.split} points")

    def layered_model(self, why: str) -> HierarchicalVAE:
        """The model if it has two or more latent layers; else NotApplicable(why)."""
        if isinstance(self.model, HierarchicalVAE) and self.model.depth >= 2:
            return self.model
        raise plots.NotApplicable(why)

    def conditional_model(self, why: str) -> HierarchicalVAE:
        """The model if it reads labels (model.conditional); else NotApplicable(why)."""
        if isinstance(self.model, HierarchicalVAE) and self.model.classes:
            return self.model
        raise plots.NotApplicable(why)

    def layers(self, path: Path) -> Path:
        model = self.layered_model("the layer picture is for hierarchical models "
                                   "(model.latent_layers with two or more entries)")
        self.require_image()
        return plots.plot_top_fixed(model, path, rows=8, cols=8)

    def classes(self, path: Path) -> Path:
        model = self.conditional_model("the class grid is for conditional models "
                                       "(model.conditional=true)")
        self.require_image()
        return plots.plot_class_grid(model, path, per_class=self.options.n or 10)

    def kl_layers(self, path: Path) -> Path:
        from vaelab.training.runs import RunDir
        from vaelab.viz.layer_plots import plot_layer_kl

        self.layered_model("does not apply: KL per layer is for hierarchical models "
                           "(model.latent_layers with two or more entries)")
        return plot_layer_kl(RunDir(self.run.path).read_metrics(), path)

    def relabel(self, path: Path) -> Path:
        from vaelab.data.prepare import with_labels
        from vaelab.viz.layer_plots import plot_relabel

        model = self.conditional_model("does not apply: decoding under every label is for "
                                       "conditional models (model.conditional=true)")
        self.require_image()
        if self.y is None:
            raise plots.NotApplicable(f"does not apply: the {self.split} split has no labels "
                                      "to encode with")
        n = self.options.n or 8
        x = with_labels(self.run.config, self.dataset, self.x.cpu())[:n].to(self.x.device)
        return plot_relabel(model, x, path)

    def sweep(self, path: Path) -> Path:
        if not is_categorical_model(self.model):
            raise plots.NotApplicable("the class sweep is for categorical latents")
        self.require_image()
        return plots.plot_class_sweep(self.model, path)


def render(run: Run, kinds: Sequence[str] = KINDS, out_dir: str | Path | None = None,
           options: Options | None = None) -> list[Figure]:
    """Draw ``kinds`` for ``run`` into ``out_dir`` (default: the run folder)."""
    out = Path(out_dir) if out_dir is not None else Path(run.path)
    out.mkdir(parents=True, exist_ok=True)
    pictures = RunPictures(run, options)
    return [render_one(pictures, kind, out) for kind in kinds]


def render_one(pictures: RunPictures, kind: str, out: Path) -> Figure:
    path = out / FILENAMES[kind]
    try:
        written = getattr(pictures, kind)(path)
    except plots.NotApplicable as why:
        return Figure(kind, None, str(why))
    return Figure(kind, Path(written))


def render_safely(run: Run, kinds: Sequence[str] = TRAIN_KINDS) -> tuple[list[str], dict[str, str]]:
    """The end-of-training pictures: (file names, {kind: why skipped}).

    A picture that fails for an unexpected reason is reported and skipped, never allowed
    to lose the run's summary after hours of training.
    """
    names: list[str] = []
    skipped: dict[str, str] = {}
    pictures = RunPictures(run)
    for kind in kinds:
        try:
            figure = render_one(pictures, kind, Path(run.path))
        except Exception as err:  # one bad picture must not lose the run
            message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"warning: picture '{kind}' failed ({message}); skipped")
            skipped[kind] = f"failed: {message}"
            continue
        if figure.path is None:
            skipped[kind] = figure.note
        else:
            names.append(figure.path.name)
    return names, skipped
