"""Conditional VAE (model.conditional): labels into encoder and decoder, log p(x|y) reported,
and data without labels refused before anything is written."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiny import TINY_OVERRIDES, make_npz, tiny_config
from vaelab.api import fit
from vaelab.build import build_model
from vaelab.cli import main
from vaelab.config import ConfigError, ModelConfig
from vaelab.evaluation.evaluate import importance_log_likelihood
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.viz.figures import render

SETTINGS = ("train.epochs=6", "model.latent_dim=4", "model.hidden=[32]", "eval.iw_samples=0")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """400 8x8 images from 4 prototypes, labelled by prototype."""
    return make_npz(tmp_path_factory.mktemp("cvae") / "tiny.npz", n=400)


def test_labels_make_the_likelihood_higher(tmp_path, labelled):
    """Same data, model size and seed: log p(x|y) of the conditional model exceeds log p(x)
    of the unconditional one, by more than 3 standard errors of the paired difference (the
    label names the prototype: up to log 4 = 1.39 nats of information)."""
    runs = {name: fit(tiny_config(labelled, *SETTINGS, *extra), out=tmp_path / name,
                      pictures=False)
            for name, extra in (("cvae", ("model.conditional=true",)), ("vae", ()))}
    assert isinstance(runs["cvae"].model, HierarchicalVAE) and runs["cvae"].model.classes == 4
    assert runs["cvae"].config.model.label_classes == 4  # resolved, saved, read back
    ll = {}
    for name, run in runs.items():
        torch.manual_seed(0)
        ll[name] = importance_log_likelihood(run.model, run.data("test"), samples=200)
    diff = ll["cvae"] - ll["vae"]
    se = diff.std().item() / math.sqrt(diff.numel())
    assert diff.mean().item() > 3 * se, (diff.mean().item(), se)
    report = runs["cvae"].evaluate("test", iw_samples=50)
    assert report["log_likelihood_of"] == "log p(x|y), labels given"


def test_samples_per_class_follow_the_label(tmp_path, labelled):
    """sample(labels=c) decodes under label c: each class's mean training image is nearer
    the mean of 256 samples under its own label than under any other label (after 6 short
    epochs the samples are still close to the overall mean; the label moves them)."""
    run = fit(tiny_config(labelled, *SETTINGS, "model.conditional=true"), out=tmp_path / "r",
              pictures=False)
    arrays = np.load(labelled)
    x, y = torch.as_tensor(arrays["x_train"]), torch.as_tensor(arrays["y_train"])
    class_means = torch.stack([x[y == c].mean(0) for c in range(4)]).flatten(1)  # (4, D)
    torch.manual_seed(1)
    sample_means = torch.stack([run.model.sample(256, labels=torch.full((256,), c)).mean(0)
                                for c in range(4)]).flatten(1)
    distances = torch.cdist(sample_means, class_means)  # (label, class)
    assert distances.argmin(0).tolist() == [0, 1, 2, 3], distances
    (figure,) = render(run, ["classes"], tmp_path / "pics")
    assert figure.path is not None and figure.path.name == "class-grid.png"


def test_conditional_on_data_without_labels_fails_before_anything_is_written(tmp_path,
                                                                           capsys):
    src = make_npz(tmp_path / "l.npz")
    arrays = np.load(src)
    path = tmp_path / "nolabels.npz"
    np.savez(path, **{k: arrays[k] for k in arrays.files if k.startswith("x_")})
    out = tmp_path / "run"
    args = ["train", "--out", str(out)]
    for item in (f"data.name='{path}'", *TINY_OVERRIDES, "model.conditional=true"):
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.conditional=true needs labels" in err and "has none" in err
    assert not out.exists()


@pytest.mark.parametrize("cfg,match", [
    (ModelConfig(conditional=True, label_classes=4, encoder="conv"), "MLP encoder"),
    (ModelConfig(conditional=True, label_classes=0), "model.label_classes=0"),
])
def test_bad_conditional_models_name_the_fix(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_model(cfg, (1, 8, 8))
