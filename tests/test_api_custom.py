"""Your own networks through ``fit``: a conv encoder/decoder written here (not in vaelab)
trains into a normal run folder, which evaluation, pictures, the report and the explorer
read; it loads back with identical outputs (given again or by import path); modules of the
wrong shape fail before training, naming the module and both shapes, with nothing written.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vaelab
from tiny import make_npz, tiny_config
from vaelab.cli import main
from vaelab.config import ConfigError
from vaelab.training.runs import RunError
from vaelab.viz.explorer import Explorer, LoadedModel
from vaelab.viz.figures import render
from vaelab.viz.report import write_report


class ConvEncoder(nn.Module):
    """(B, 1, 8, 8) -> (B, out): one stride-2 conv, then a linear map."""

    def __init__(self, out: int, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, stride=2, padding=1)  # -> (B, c, 4, 4)
        self.head = nn.Linear(channels * 16, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class ConvDecoder(nn.Module):
    """(B, latent) -> (B, 1, 8, 8) (k = 1 left out), or (B, k, 1, 8, 8) for k > 1."""

    def __init__(self, latent: int, channels: int = 4, k: int = 1):
        super().__init__()
        self.channels, self.k = channels, k
        self.head = nn.Linear(latent, channels * 16)
        self.deconv = nn.ConvTranspose2d(channels, k, 4, stride=2, padding=1)  # -> 8 x 8

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.head(z)).view(-1, self.channels, 4, 4)
        out = self.deconv(h)  # (B, k, 8, 8)
        return out if self.k == 1 else out.unsqueeze(2)  # (B, k, 1, 8, 8)


LATENT = 2  # tiny_config's model.latent_dim


def own_networks(channels: int = 4):
    return ConvEncoder(2 * LATENT, channels), ConvDecoder(LATENT, channels)


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    config = tiny_config(make_npz(root / "data.npz"), "train.epochs=2")
    encoder, decoder = own_networks()
    return vaelab.fit(config, out=root / "run", encoder=encoder, decoder=decoder)


def test_own_networks_train_into_a_full_run_folder(own_run):
    path = own_run.path
    config = vaelab.training.runs.RunDir(path).read_config()
    assert (config.model.encoder, config.model.decoder) == ("python", "python")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["encoder_class"] == "test_api_custom:ConvEncoder"
    summary = json.loads((path / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test"]["n"] == 24
    assert (path / "checkpoints" / "best.pt").is_file() and (path / "report.html").is_file()
    assert "samples.png" in summary["pictures"]
    assert isinstance(own_run.model.encoder, ConvEncoder)
    # eval, plot, report and the explorer on the run (API level)
    report = own_run.evaluate("test", iw_samples=4)
    assert report["n"] == 24 and report["nll"] > 0
    drawn = [f.path for f in render(own_run, ("samples", "reconstructions", "scatter"))]
    assert all(p is not None and p.is_file() for p in drawn)
    assert write_report(path).stat().st_size > 1000
    explorer = LoadedModel("own", own_run, points=10)
    assert Explorer([explorer]) is not None
    out = explorer.decode({"z": [0.0] * LATENT})
    assert out["image"].startswith("data:image/png;base64,")


def test_loaded_back_with_the_modules_gives_identical_outputs(own_run):
    encoder, decoder = own_networks()
    run = vaelab.load_run(own_run.path, encoder=encoder, decoder=decoder)
    x = run.data("test")[:5]
    torch.testing.assert_close(run.model.encode(x).mean, own_run.model.encode(x).mean,
                               rtol=0, atol=0)
    z = torch.randn(3, 5, LATENT)  # importance samples ahead of the batch
    torch.testing.assert_close(run.model.decode(z).mean, own_run.model.decode(z).mean,
                               rtol=0, atol=0)
    assert run.model.decode(z).batch_shape == (3, 5)


def test_loading_without_or_with_mismatched_modules_fails_clearly(own_run):
    with pytest.raises(RunError, match=r"its encoder passed to fit\(\) "
                                       r"\(test_api_custom:ConvEncoder\).*load_run\(path, "
                                       r"encoder=\.\.\.\)"):
        vaelab.load_run(own_run.path)
    encoder, decoder = own_networks(channels=6)
    with pytest.raises(RunError, match="does not match the model's decoder and encoder "
                                       r"\(different shapes: encoder.conv.weight"):
        vaelab.load_run(own_run.path, encoder=encoder, decoder=decoder)
    with pytest.raises(RunError, match="was trained with its decoder passed to fit"):
        vaelab.load_run(own_run.path, encoder=own_networks()[0])


def test_resume_with_the_modules_continues(tmp_path):
    config = tiny_config(make_npz(tmp_path / "data.npz"))
    first = vaelab.fit(config, out=tmp_path / "run", pictures=False, encoder=own_networks()[0],
                       decoder=own_networks()[1])
    saved = first.path / "config.toml"
    saved.write_text(saved.read_text().replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ConfigError, match="model.encoder=python.*pass it again"):
        vaelab.fit(config, resume=first.path)
    run = vaelab.fit(config, resume=first.path, pictures=False, encoder=own_networks()[0],
                     decoder=own_networks()[1])
    assert [r["epoch"] for r in vaelab.training.runs.RunDir(run.path).read_metrics()] == [1, 2]


def test_modules_by_import_path_rebuild_themselves(tmp_path, capsys):
    config = tiny_config(make_npz(tmp_path / "data.npz"),
                         "model.encoder='test_api_custom:ConvEncoder'",
                         f"model.encoder_kwargs={{out = {2 * LATENT}, channels = 3}}",
                         "model.decoder='test_api_custom:ConvDecoder'",
                         f"model.decoder_kwargs={{latent = {LATENT}, channels = 3}}")
    trained = vaelab.fit(config, out=tmp_path / "run", pictures=False)
    assert trained.model.encoder.conv.out_channels == 3
    run = vaelab.load_run(trained.path)  # nothing passed: built from the recorded path
    x = run.data("test")[:4]
    torch.testing.assert_close(run.model.reconstruct(x), trained.model.reconstruct(x),
                               rtol=0, atol=0)
    assert main(["eval", str(trained.path), "--json", "-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 24


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_package_xyz:Net", "cannot import 'no_such_package_xyz'"),
    ("test_api_custom:Nope", "has no attribute 'Nope'"),
    ("test_api_custom:LATENT", "built a int, not a torch.nn.Module|could not be built"),
])
def test_bad_import_paths_fail_before_anything_is_written(tmp_path, spec, message):
    config = tiny_config(make_npz(tmp_path / "data.npz"), f"model.encoder='{spec}'")
    with pytest.raises(ConfigError, match=message):
        vaelab.fit(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


class Fixed(nn.Module):
    """Returns zeros of a fixed per-row shape: a module of the wrong (or right) shape."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.zeros(t.shape[0], *self.shape)


# (overrides, encoder output per row, decoder output per row, the message expected)
WRONG_SHAPES = [
    (["model.latent=gaussian", "model.latent_dim=20"], (30,), (1, 8, 8),
     r"encoder returned \(B, 30\) for x of shape \(B, 1, 8, 8\); model.latent=gaussian with "
     r"latent_dim=20 needs \(B, 40\): 20 means and 20 scales"),
    (["model.latent=gaussian-full", "model.latent_dim=3"], (6,), (1, 8, 8),
     r"encoder returned \(B, 6\).*model.latent=gaussian-full with latent_dim=3 needs "
     r"\(B, 9\): 3 means and the 6 entries of the lower-triangular Cholesky factor"),
    (["model.latent=categorical", "model.latent_dim=4", "model.num_classes=3"], (4,),
     (1, 8, 8), r"encoder returned \(B, 4\).*model.latent=categorical with latent_dim=4 "
                r"needs \(B, 12\): 4 x 3 logits"),
    (["model.latent=bernoulli", "model.latent_dim=5"], (5, 1), (1, 8, 8),
     r"encoder returned \(B, 5, 1\).*model.latent=bernoulli with latent_dim=5 needs "
     r"\(B, 5\): 5 logits"),
    (["model.likelihood=bernoulli"], (4,), (64,),
     r"decoder returned \(B, 64\) for z of shape \(B, 2\); model.likelihood=bernoulli on data "
     r"of shape \(1, 8, 8\) needs \(B, 1, 1, 8, 8\) or \(B, 1, 8, 8\): logits"),
    (["model.likelihood=gaussian"], (4,), (2, 8, 8),
     r"decoder returned \(B, 2, 8, 8\).*model.likelihood=gaussian .*needs \(B, 1, 1, 8, 8\) "
     r"or \(B, 1, 8, 8\): the means"),
    (["model.likelihood=gaussian", "model.likelihood_variance=output"], (4,), (1, 8, 8),
     r"decoder returned \(B, 1, 8, 8\).*model.likelihood=gaussian .*needs "
     r"\(B, 2, 1, 8, 8\): k=0 the means, k=1 the scales"),
    (["model.likelihood=continuous-bernoulli"], (4,), (1, 1, 8, 7),
     r"decoder returned \(B, 1, 1, 8, 7\).*model.likelihood=continuous-bernoulli .*needs "
     r"\(B, 1, 1, 8, 8\)"),
    (["model.likelihood=logistic-256"], (4,), (1, 8, 8),
     r"decoder returned \(B, 1, 8, 8\).*model.likelihood=logistic-256 .*needs "
     r"\(B, 2, 1, 8, 8\): k=0 the means, k=1 the log-scales"),
]


@pytest.mark.parametrize(("overrides", "enc_out", "dec_out", "message"), WRONG_SHAPES)
def test_wrong_shapes_fail_before_training_naming_module_and_shapes(
        tmp_path, overrides, enc_out, dec_out, message):
    data = make_npz(tmp_path / "data.npz")
    before = sorted(tmp_path.iterdir())
    config = tiny_config(data, *overrides)
    with pytest.raises(ConfigError, match=message):
        vaelab.fit(config, out=tmp_path / "run", encoder=Fixed(*enc_out),
                   decoder=Fixed(*dec_out))
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_a_module_that_raises_is_named():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(ConfigError, match=r"decoder failed on the dry batch of shape "
                                          r"\(B, 2\): RuntimeError: mat1 and mat2"):
        vaelab.build.build_model(tiny_config("x.npz").model, (1, 8, 8), encoder=Fixed(4),
                                 decoder=Broken())
