"""The hierarchical and conditional pictures: KL per layer over training (from metrics.jsonl)
and test codes decoded under every label; drawn by ``vaelab plot`` on runs of that kind and
skipped with "does not apply" on others."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vaelab.cli import main
from vaelab.viz.figures import render
from vaelab.viz.layer_plots import layer_numbers, plot_layer_kl
from vaelab.viz.plots import NotApplicable
from viz_runs import tiny_run

LAYERED = ("model.latent_layers=[4,2]", "model.conditional=true", "train.epochs=3")


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    return tiny_run(tmp_path_factory, "gaussian", "image", *LAYERED)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return tiny_run(tmp_path_factory, "gaussian", "image")


def test_vaelab_plot_draws_both_on_a_conditional_hierarchy(layered, tmp_path, capsys):
    assert main(["plot", str(layered.path), "--what", "kl_layers,relabel",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out
    for name in ("kl-per-layer.png", "relabel.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 100
        assert (tmp_path / name).stat().st_size < 200_000


def test_both_are_refused_on_a_one_layer_unconditional_run(plain, tmp_path, capsys):
    assert main(["plot", str(plain.path), "--what", "kl_layers,relabel",
                 "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("skipped: does not apply" in line for line in lines)
    assert not list(tmp_path.iterdir())


def test_relabel_columns_are_the_codes_decoded_under_each_label(layered):
    model = layered.model
    figure = render(layered, ["relabel"], layered.path / "pictures-test")[0]
    assert figure.path is not None
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 64, generator=g) < 0.5).float()
    labels = torch.tensor([0, 1, 2, 3, 1])
    xy = torch.cat([x, torch.nn.functional.one_hot(labels, model.classes).float()], 1)
    decoded = model.relabel(xy)  # (5, C, 1, 8, 8)
    assert decoded.shape == (5, model.classes, 1, 8, 8)
    # the column of each image's own label is its reconstruction (q means, then E[x|z_1, y])
    own = decoded[torch.arange(5), labels]
    torch.testing.assert_close(own, model.reconstruct(xy), rtol=0, atol=1e-6)
    # another label changes the picture
    assert (decoded[:, 0] - decoded[:, 1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="labelled rows"):
        model.relabel(x)


def test_kl_per_layer_reads_the_records_of_every_layer(layered):
    from vaelab.training.runs import RunDir

    history = RunDir(layered.path).read_metrics()
    assert len(history) == 3 and layer_numbers(history) == [1, 2]
    assert all(r["train_kl_layer2"] >= 0 for r in history)  # the closed-form top
    with pytest.raises(NotApplicable, match="does not apply"):
        plot_layer_kl([{"epoch": 1, "train_kl": 3.0}], layered.path / "unused.png")


def test_layer_picture_of_a_conditional_model_keeps_one_label_per_row(layered, tmp_path,
                                                                     monkeypatch):
    from vaelab.viz import plots

    model = layered.model
    seen = {}
    original = model.sample

    def spy(n, **kwargs):
        seen.update(kwargs)
        return original(n, **kwargs)

    monkeypatch.setattr(model, "sample", spy)
    plots.plot_top_fixed(model, tmp_path / "layers.png", rows=3, cols=4)
    assert seen["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(seen["top"][:4], seen["top"][:1].expand(4, -1))
