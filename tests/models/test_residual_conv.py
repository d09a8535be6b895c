"""Residual conv networks (model.residual_blocks): 0 keeps today's conv nets' module
layout; each block starts as the identity and learns; the shapes hold for any image size and
leading batch dimensions; a hierarchy with residual conv networks trains, evaluates and
reloads; residual blocks on MLP networks are refused before anything is written."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tiny import TINY_OVERRIDES, make_npz, tiny_config
from vaelab.api import fit, load_run
from vaelab.build import build_model
from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.networks import ConvDecoder, ConvEncoder, ResidualBlock

CONV = dict(encoder="conv", decoder="conv", channels=[4, 6], hidden=[8], latent_dim=3)


def test_zero_blocks_keep_todays_module_layout():
    """model.residual_blocks=0 (the default) adds no module, so conv runs saved before the
    option existed load by the same state-dict keys (checked once against the previous
    commit's code: the same keys and, on the same seed, the same weights)."""
    model = build_model(ModelConfig(**CONV), (1, 10, 10))
    assert list(model.state_dict()) == [
        f"{net}.{part}.{i}.{kind}"
        for net, parts in (("encoder", (("conv", (0, 2)), ("head", (0, 2)))),
                           ("decoder", (("head", (0, 2)), ("deconv", (0, 2)))))
        for part, indices in parts for i in indices for kind in ("weight", "bias")]
    assert not any(isinstance(m, ResidualBlock) for m in model.modules())


def test_a_block_starts_as_the_identity_and_its_gradients_make_it_learn():
    torch.manual_seed(0)
    block = ResidualBlock(5, "relu")
    x = torch.randn(3, 5, 7, 7)
    assert torch.equal(block(x), x)
    block(x).square().sum().backward()
    last = block.branch[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().max() > 0
    with torch.no_grad():
        last.weight.add_(0.1 * last.weight.grad)
    assert not torch.allclose(block(x), x)


@pytest.mark.parametrize("event", [(1, 10, 10), (3, 9, 7)])
def test_shapes_hold_for_odd_sizes_and_leading_batch_dimensions(event):
    torch.manual_seed(0)
    enc = ConvEncoder(event, [4, 6], 10, "relu", hidden=[8], blocks=2)
    dec = ConvDecoder(5, [4, 6], event, params_per_element=2, act="relu", hidden=[8], blocks=2)
    assert sum(isinstance(m, ResidualBlock) for m in enc.modules()) == 4
    assert sum(isinstance(m, ResidualBlock) for m in dec.modules()) == 4
    x = torch.rand(2, 3, *event)  # (K, B, C, H, W)
    assert enc(x).shape == (2, 3, 10)
    assert dec(torch.randn(2, 3, 5)).shape == (2, 3, 2, *event)


def test_a_fresh_residual_encoder_computes_what_the_plain_one_does():
    """With the blocks' last convolutions still zero, a residual encoder computes exactly what
    the plain one with the same stride-2 and head weights does."""
    torch.manual_seed(0)
    plain = ConvEncoder((1, 10, 10), [4, 6], 6, "relu", hidden=[8])
    res = ConvEncoder((1, 10, 10), [4, 6], 6, "relu", hidden=[8], blocks=1)
    strided = [m for m in res.conv if isinstance(m, torch.nn.Conv2d)]
    for src, dst in zip([m for m in plain.conv if isinstance(m, torch.nn.Conv2d)], strided,
                        strict=True):
        dst.load_state_dict(src.state_dict())
    res.head.load_state_dict(plain.head.state_dict())
    x = torch.rand(4, 1, 10, 10)
    torch.testing.assert_close(res(x), plain(x))


def test_a_residual_conv_hierarchy_trains_evaluates_and_reloads(tmp_path):
    data = make_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    run = fit(tiny_config(data, "model.encoder=conv", "model.decoder=conv",
                          "model.channels=[4, 8]", "model.residual_blocks=1",
                          "model.latent_layers=[4, 2]", "model.inference=top-down",
                          "model.layer_hidden=[8]", "train.epochs=5", "train.lr=0.01"),
              out=out, pictures=False)
    assert isinstance(run.model, HierarchicalVAE)
    assert sum(isinstance(m, ResidualBlock) for m in run.model.modules()) == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_bound"] > records[0]["train_bound"] + 0.5  # nats per image
    blocks = [m for m in run.model.modules() if isinstance(m, ResidualBlock)]
    assert all(b.branch[-1].weight.abs().max() > 0 for b in blocks)  # every block learned
    test = json.loads((out / "summary.json").read_text())["test"]
    assert math.isfinite(test["log_likelihood"])
    again = load_run(out).evaluate("test", iw_samples=8, seed=0)
    assert again["log_likelihood"] == pytest.approx(test["log_likelihood"], abs=1e-5)


def test_residual_blocks_on_mlp_networks_are_refused_before_anything_is_written(tmp_path,
                                                                                  capsys):
    data = make_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    args = ["train", "--out", str(out)]
    for item in (f"data.name='{data}'", *TINY_OVERRIDES, "model.residual_blocks=2"):
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.residual_blocks=2" in err \
        and "model.encoder=conv" in err, err
    assert not out.exists()
