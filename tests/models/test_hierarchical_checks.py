"""The collapse warning names the collapsed layer in a real evaluation, and bad hierarchical
or conditional input fails through the Python API (``vaelab.fit``) too, before anything is
written (the CLI cases are in test_hierarchical.py and test_conditional.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiny import make_npz, tiny_config
from vaelab.api import fit
from vaelab.build import build_model
from vaelab.config import ConfigError, ModelConfig
from vaelab.evaluation.evaluate import evaluate

EVENT = (1, 8, 8)


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_evaluation_warns_about_the_collapsed_layer_by_name(inference):
    """Layer 2's q made independent of x (the last layer of the network into it zeroed):
    no active unit there, and the one warning names layer 2, not layer 1."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_layers=[6, 4], inference=inference, hidden=[16],
                                    layer_hidden=[8]), EVENT)
    with torch.no_grad():
        model.up[0][-1].weight.zero_()
        model.encoder.net[-1].weight.mul_(20)  # layer 1 clearly active
    x = (torch.rand(200, *EVENT, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    report = evaluate(model, x, iw_samples=0)
    assert report["latent_layers"] == [6, 4]
    assert report["active_units_per_layer"][1] == 0
    assert report["active_units_per_layer"][0] > 3
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith("posterior collapse in latent layer 2 (of size 4)")


def test_bad_layered_input_fails_in_the_api_before_a_folder_exists(tmp_path):
    data = make_npz(tmp_path / "tiny.npz")
    arrays = np.load(data)
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, **{k: arrays[k] for k in arrays.files if k.startswith("x_")})
    cases = [
        (data, ["model.latent_layers=[4,0]"], "model.latent_layers"),
        (data, ["model.latent_layers=[0]"], "model.latent_layers"),
        (data, ["model.layer_hidden=[0]", "model.latent_layers=[4,2]"], "model.layer_hidden"),
        (data, ["model.inference=top-down", "model.latent=bernoulli"],
         "model.inference=top-down combines Gaussian conditionals"),
        (unlabelled, ["model.conditional=true"], "needs labels"),
    ]
    for i, (path, extra, match) in enumerate(cases):
        out = tmp_path / f"run{i}"
        with pytest.raises(ConfigError, match=match):
            fit(tiny_config(path, *extra), out=out, pictures=False)
        assert not out.exists(), extra
