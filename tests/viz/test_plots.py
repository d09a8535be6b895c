"""Pictures of a run: every kind on every latent family and data shape, and the latent-space
geometry behind them (projections, grids, interpolation paths, KL per dimension)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vaelab
from tiny import make_npz, tiny_config
from vaelab.cli import main
from vaelab.evaluation.diagnostics import kl_per_dimension
from vaelab.models.latent_space import (
    encode_means,
    fit_projection,
    grid_codes,
    grid_values,
    interpolate,
    slerp,
)
from vaelab.models.priors import MixtureOfGaussians
from vaelab.viz.figures import KINDS, Options, parse_kinds, render
from vaelab.viz.snapshots import load_snapshots
from viz_runs import CASES, tiny_run

Z = 4.0  # allowed standard errors


def applies(kind: str, family: str, shape: str) -> bool:
    image = shape != "tabular"
    discrete = family in ("categorical", "bernoulli")
    if kind in ("scatter", "curves", "kl", "animation"):
        return True
    if kind == "grid":
        return image and not discrete
    if kind == "sweep":
        return image and family == "categorical"
    if kind in ("layers", "classes", "kl_layers", "relabel"):
        return False  # hierarchical / conditional models only (their tests)
    return image  # interpolation, samples, reconstructions


@pytest.mark.parametrize(("family", "shape"), CASES)
def test_every_picture_on_every_family_and_data_shape(tmp_path_factory, tmp_path, family, shape):
    run = tiny_run(tmp_path_factory, family, shape)
    figures = render(run, KINDS, tmp_path)
    assert [f.kind for f in figures] == list(KINDS)
    for figure in figures:
        if applies(figure.kind, family, shape):
            assert figure.path is not None, f"{figure.kind} skipped: {figure.note}"
            with Image.open(figure.path) as img:
                assert img.width > 200 and img.height > 100
                if figure.kind == "animation":
                    assert img.n_frames == 2  # snapshots before training and after epoch 1
            continue
        assert figure.path is None, f"{figure.kind} should not apply to {family}/{shape}"
        if figure.kind == "sweep" and family != "categorical":
            assert "categorical" in figure.note
        elif figure.kind in ("layers", "classes", "kl_layers", "relabel"):
            assert ("hierarchical" if figure.kind in ("layers", "kl_layers")
                    else "conditional") in figure.note
        elif shape == "tabular":
            assert "not an image dataset" in figure.note
        elif figure.kind == "grid":
            assert "continuous latent" in figure.note
    assert not list(tmp_path.glob("*.tmp"))


def test_dims_and_quantile_grid_options(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory, "gaussian", "image")
    options = Options(dims=(2, 0), grid_kind="quantile", n=5)
    figures = {f.kind: f for f in render(run, ["scatter", "grid", "animation"], tmp_path,
                                         options)}
    assert all(f.path is not None for f in figures.values())
    with pytest.raises(ValueError, match="--dims"):
        render(run, ["scatter"], tmp_path, Options(dims=(0, 3)))


# -- geometry ---------------------------------------------------------------------------------

def test_projection_direct_dims_and_pca():
    codes = torch.randn(50, 2)
    direct = fit_projection(codes)
    assert direct.kind == "direct" and torch.equal(direct(codes), codes)
    wide = torch.randn(50, 4)
    chosen = fit_projection(wide, dims=(3, 1))
    assert torch.equal(chosen(wide), wide[:, [3, 1]])
    # points on a 2-D plane in 6-D: PCA is an isometry of the plane
    gen = torch.Generator().manual_seed(0)
    plane, _ = torch.linalg.qr(torch.randn(6, 2, generator=gen, dtype=torch.float64))
    uv = torch.randn(80, 2, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    points = uv @ plane.T + torch.randn(6, generator=gen, dtype=torch.float64)
    pca = fit_projection(points)
    assert pca.kind == "pca"
    torch.testing.assert_close(pca.basis @ pca.basis.T, torch.eye(2, dtype=torch.float64))
    projected = pca(points)
    torch.testing.assert_close(torch.cdist(projected, projected), torch.cdist(uv, uv))
    assert projected[:, 0].var() > projected[:, 1].var()  # first axis: most variance
    assert "PC1" in pca.axis_labels[0]


def test_lift_moves_only_within_the_plane():
    gen = torch.Generator().manual_seed(1)
    codes = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    pca = fit_projection(codes)
    anchor = codes[7]
    target = torch.tensor([[0.5, -1.25]], dtype=torch.float64)
    lifted = pca.lift(target, anchor)
    torch.testing.assert_close(pca(lifted), target)
    off_plane = torch.eye(5, dtype=torch.float64) - pca.basis.T @ pca.basis
    torch.testing.assert_close(off_plane @ lifted[0], off_plane @ anchor)


def test_grid_values_linear_and_quantile():
    linear = grid_values(7, "linear")
    torch.testing.assert_close(linear, torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]))
    quantile = grid_values(10, "quantile")
    expected = norm.ppf((np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(quantile.numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="grid-kind"):
        grid_values(5, "cubic")


def test_grid_codes_read_like_a_plot():
    values = torch.tensor([-1.0, 0.0, 1.0])
    codes = grid_codes(4, values, dims=(2, 0))
    assert codes.shape == (9, 4)
    # top-left: first axis smallest, second axis largest; other dimensions stay 0
    assert codes[0].tolist() == [1.0, 0.0, -1.0, 0.0]
    assert codes[8].tolist() == [-1.0, 0.0, 1.0, 0.0]
    assert codes[:, [1, 3]].abs().sum() == 0


def test_slerp_and_linear_paths():
    a, b = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    path = slerp(a, b, torch.linspace(0, 1, 9))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), torch.full((9,), 2.0))  # on the circle
    angles = torch.atan2(path[:, 1], path[:, 0])
    torch.testing.assert_close(angles, torch.linspace(0, math.pi / 2, 9))  # constant speed
    c = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(slerp(c, 3 * c, torch.tensor([0.5]))[0], 2 * c)  # parallel
    lin = interpolate(a, b, 5, "linear")
    torch.testing.assert_close(lin[2], (a + b) / 2)
    with pytest.raises(ValueError, match="linear or slerp"):
        interpolate(a, b, 5, "cubic")


# -- KL per dimension -------------------------------------------------------------------------

class FixedModel:
    """Stands in for a VAE: datapoint i (x[i] = i) has the posterior make_q(i), a fixed prior."""

    def __init__(self, make_q, p, dim: int):
        self.make_q, self.p, self.latent_shape = make_q, p, (dim,)

    def encode(self, x):
        return self.make_q(x.long())

    def prior(self):
        return self.p


@pytest.mark.parametrize("family", ["gaussian", "categorical", "bernoulli"])
def test_factorized_kl_per_dimension_sums_to_total(tmp_path_factory, family):
    run = tiny_run(tmp_path_factory, family, "image")
    x = run.data("test")
    values, stderr, kind = kl_per_dimension(run.model, x)
    assert kind == "exact"
    with torch.no_grad():
        total = kl_divergence(run.model.encode(x), run.model.prior()).mean()
    torch.testing.assert_close(values.sum(), total, atol=1e-5, rtol=1e-5)
    assert (values >= -1e-6).all() and stderr.shape == values.shape


def test_full_covariance_kl_uses_exact_one_dimensional_marginals():
    gen = torch.Generator().manual_seed(2)
    loc = torch.randn(20, 3, generator=gen)
    tril = torch.tril(torch.randn(20, 3, 3, generator=gen) * 0.3) + torch.eye(3)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    model = FixedModel(lambda i: MultivariateNormal(loc[i], scale_tril=tril[i]), p, 3)
    values, _, kind = kl_per_dimension(model, torch.arange(20.0))
    assert kind == "marginal"
    var = MultivariateNormal(loc, scale_tril=tril).variance
    exact = 0.5 * (var + loc**2 - 1 - var.log())  # KL(N(mu, s^2) || N(0, 1)) per dimension
    torch.testing.assert_close(values, exact.mean(0))


def test_mixture_prior_marginal_kl_matches_numerical_integral():
    torch.manual_seed(3)
    b = 400  # identical posteriors: the spread over datapoints is pure Monte Carlo error
    loc, scale = torch.tensor([0.7, -0.4]), torch.tensor([0.5, 1.3])
    with torch.no_grad():
        p = MixtureOfGaussians(2, 3)()
        model = FixedModel(lambda i: Independent(Normal(loc.expand(len(i), 2),
                                                        scale.expand(len(i), 2)), 1), p, 2)
        values, stderr, kind = kl_per_dimension(model, torch.arange(float(b)))
        assert kind == "marginal"
        grid = torch.linspace(-14, 14, 40001, dtype=torch.float64)
        for d in range(2):
            log_q = Normal(loc[d].double(), scale[d].double()).log_prob(grid)
            comp = Normal(p.component_distribution.base_dist.loc[:, d].double(),
                          p.component_distribution.base_dist.scale[:, d].double())
            log_w = torch.log_softmax(p.mixture_distribution.logits.double(), 0)
            log_p = torch.logsumexp(log_w + comp.log_prob(grid[:, None]), 1)
            exact = torch.trapezoid(log_q.exp() * (log_q - log_p), grid)
            assert abs(values[d].item() - exact.item()) <= Z * stderr[d].item() + 1e-6


# -- snapshots and the animation --------------------------------------------------------------

def test_snapshots_are_the_encoder_means_at_each_saved_epoch(tmp_path):
    data = make_npz(tmp_path / "d.npz")
    common = ("train.snapshot_points=10", "eval.iw_samples=0", "data.valid_split=''")
    every2 = vaelab.fit(tiny_config(data, "train.epochs=3", "train.snapshot_every=2", *common),
                        out=tmp_path / "every2", pictures=False)
    assert [epoch for epoch, _, _ in load_snapshots(every2.path)] == [0, 2]
    run = vaelab.fit(tiny_config(data, "train.epochs=2", "train.snapshot_every=1", *common),
                     out=tmp_path / "every1", pictures=False)
    frames = load_snapshots(run.path)
    assert [epoch for epoch, _, _ in frames] == [0, 1, 2]
    final = vaelab.load_run(run.path, checkpoint="last")
    np.testing.assert_allclose(frames[-1][1], encode_means(final.model,
                                                           final.data("test")[:10]).numpy(),
                               atol=1e-6)
    labels = vaelab.data.prepare.load_split(final.config, "test").y[:10].numpy()
    np.testing.assert_array_equal(frames[-1][2], labels)
    assert not np.allclose(frames[0][1], frames[-1][1])  # training moved the posterior


def test_fit_writes_pictures_and_report(tmp_path):
    data = make_npz(tmp_path / "d.npz")
    config = tiny_config(data, "train.snapshot_every=1", "eval.iw_samples=0")
    run = vaelab.fit(config, out=tmp_path / "run")
    summary = vaelab.training.runs.RunDir(run.path).read_json("summary.json")
    for name in ("scatter.png", "prior-grid.png", "animation.gif", "kl-per-dimension.png",
                 "samples.png", "curves.png"):
        assert name in summary["pictures"] and (run.path / name).is_file()
    assert "sweep" in summary["pictures_skipped"]
    assert (run.path / "report.html").is_file()


# -- the command ------------------------------------------------------------------------------

def test_plot_command(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "gaussian", "image")
    out = tmp_path / "pics"
    code = main(["plot", str(run.path), "--what", "scatter,grid,interpolation", "--out",
                 str(out), "--dims", "0,2", "--grid-kind", "quantile", "--n", "5"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["interpolation.png", "prior-grid.png",
                                                     "scatter.png"]
    tabular = tiny_run(tmp_path_factory, "gaussian", "tabular")
    assert main(["plot", str(tabular.path), "--what", "grid", "--out", str(out)]) == 0
    assert "skipped: not an image dataset" in capsys.readouterr().out
    assert main(["plot", str(run.path), "--what", "scater"]) == 2
    assert "unknown picture 'scater'" in capsys.readouterr().err
    assert main(["plot", str(run.path), "--what", "scatter", "--dims", "0,0"]) == 2
    assert "--dims" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "not a vaelab run folder" in capsys.readouterr().err
    assert parse_kinds("all") == list(KINDS)
