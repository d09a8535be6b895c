"""Training-speed options (speed.py): bf16 autocast and torch.compile act in training mode
only; evaluation is the plain float32 forward, and parameter names do not change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab.api import fit
from vaelab.config import ConfigError, load_config
from vaelab.models.networks import ConvDecoder, MLPEncoder
from vaelab.training.speed import accelerate


def pair(kind: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """Two identical networks (one to wrap, one as the reference) and an input."""
    torch.manual_seed(0)
    if kind == "mlp":
        make, x = (lambda: MLPEncoder((1, 8, 8), [64], 10)), torch.rand(16, 1, 8, 8)
    else:
        make, x = (lambda: ConvDecoder(6, [8, 4], (3, 8, 8), 2, hidden=[16])), torch.randn(5, 6)
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    return a, b, x


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_bf16_autocasts_training_forward_and_leaves_evaluation_float32(kind):
    net, ref, x = pair(kind)
    keys = list(net.state_dict())
    accelerate([net], precision="bf16")
    assert list(net.state_dict()) == keys
    out = net(x)
    expect = ref(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, expect)  # the matmuls really ran in bfloat16 ...
    # ... with bfloat16's 8-bit mantissa: relative error of a few 2^-8 per product
    torch.testing.assert_close(out, expect, rtol=0.05, atol=0.05)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    net.eval()
    ref.eval()
    assert torch.equal(net(x), ref(x))  # evaluation: the exact float32 forward


@pytest.mark.slow
def test_compiled_training_forward_matches_eager():
    net, ref, x = pair("mlp")
    accelerate([net], compile=True)
    torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-6)
    net.eval()
    assert torch.equal(net(x), ref.eval()(x))


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError, match="train.precision must be float32 or bf16"):
        accelerate([torch.nn.Linear(2, 2)], precision="fp16")


@pytest.mark.slow
def test_bf16_compiled_training_run_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=(rng.random((48, 1, 6, 6)) * 255).astype(np.uint8),
             x_valid=(rng.random((16, 1, 6, 6)) * 255).astype(np.uint8),
             x_test=(rng.random((16, 1, 6, 6)) * 255).astype(np.uint8))
    threads = torch.get_num_threads()
    sets = [f"data.name={data}", "model.hidden=[16]", "model.latent_dim=2", "train.epochs=2",
            "train.batch_size=16", "train.threads=1", "train.progress=false",
            "eval.iw_samples=5", "train.precision=bf16", "train.compile=true"]
    try:
        run = fit(load_config(overrides=sets), out=tmp_path / "run", pictures=False)
    finally:
        torch.set_num_threads(threads)
    records = [r for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    report = run.evaluate("test", iw_samples=5)
    assert np.isfinite(report["elbo"]) and np.isfinite(report["nll"])


def test_cli_flags_set_the_config_keys(monkeypatch):
    import vaelab.api
    from vaelab.cli import main

    seen = {}

    def fake_fit(config, **kwargs):
        seen["train"] = config.train
        raise RuntimeError("stop here")

    monkeypatch.setattr(vaelab.api, "fit", fake_fit)
    assert main(["train", "--compile", "--precision", "bf16", "--no-progress"]) == 2
    assert seen["train"].compile is True and seen["train"].precision == "bf16"
    assert main(["train", "--resume", "somewhere", "--compile"]) == 2  # saved config wins
