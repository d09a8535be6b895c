"""The fused hierarchy objectives (fused_layered.py) against the general path (layered.py):
same noise, same values and gradients, for every inference scheme, objective and KL mode;
the fused nodes' backward passes against finite differences; where the path applies."""

from __future__ import annotations

import pytest
import torch

from fused_step import one_step
from vaelab import rng
from vaelab.build import build_model, build_objective
from vaelab.config import ModelConfig, ObjectiveConfig
from vaelab.inference.fused_layered import (
    LayeredPlan,
    _FusedBernoulliDecoder,
    _FusedMLP,
    layered_plan,
)
from vaelab.models import fastlinear
from vaelab.schedules import Progress

EVENT = (1, 6, 6)
SCHEMES = [("bottom-up", "ladder"), ("top-down", "ladder"), ("top-down", "residual")]


def make(inference: str, combine: str, *, sizes=(5, 3), activation: str = "tanh",
         classes: int = 0, **objective):
    cfg = ModelConfig(latent_layers=list(sizes), inference=inference, top_down=combine,
                      hidden=[12], layer_hidden=[7], activation=activation,
                      conditional=classes > 0, label_classes=classes or 0)
    torch.manual_seed(0)
    model = build_model(cfg, EVENT)
    return model, build_objective(ObjectiveConfig(**objective), EVENT)


def batch(n: int = 9, classes: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, *EVENT, generator=g) < 0.4).float()
    if not classes:
        return x
    y = torch.nn.functional.one_hot(torch.arange(n) % classes, classes).float()
    return torch.cat([x.flatten(1), y], 1)


def run(model, objective, x, *, fused: bool, progress: Progress):
    objective.fused_layers = fused
    out, grads = one_step(model, objective, x, progress)
    assert objective.trains_fused(model) == fused
    return out, grads


def assert_same(model, objective, x, progress: Progress) -> None:
    fused, fused_grads = run(model, objective, x, fused=True, progress=progress)
    objective._plans.clear()
    general, general_grads = run(model, objective, x, fused=False, progress=progress)
    for name in ("loss", "bound", "rec", "kl"):
        torch.testing.assert_close(getattr(fused, name), getattr(general, name),
                                   rtol=1e-5, atol=1e-5, msg=name)
    assert len(fused.layer_kl) == len(general.layer_kl) == model.depth
    for a, b in zip(fused.layer_kl, general.layer_kl, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fused.metrics().keys() == general.metrics().keys()
    for name, g in general_grads.items():
        torch.testing.assert_close(fused_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
@pytest.mark.parametrize("epoch", [0.5, 3.0], ids=["warm-up", "beta=1"])
@pytest.mark.parametrize("samples", [1, 5])
@pytest.mark.parametrize("inference,combine", SCHEMES)
def test_fused_iwae_equals_the_general_path(inference, combine, samples, epoch, matmul):
    model, objective = make(inference, combine, name="iwae", samples=samples,
                            warmup_epochs=2.0)
    fastlinear.set_matmul(model, matmul)  # train.matmul: both libraries, both paths
    assert_same(model, objective, batch(), Progress(step=3, epoch=epoch))
    objective.fused_layers = True
    out = objective(model, batch(), Progress(step=3, epoch=epoch))
    node = type(out.loss.grad_fn).__name__  # top-down: the latent stage is one node
    assert (node == "_TopDownIwaeBackward") == (inference == "top-down"), node


@pytest.mark.parametrize("kl,samples,free_bits", [("auto", 1, 0.0), ("auto", 3, 0.0),
                                                   ("mc", 2, 0.0), ("auto", 2, 0.3)])
@pytest.mark.parametrize("inference,combine", SCHEMES)
def test_fused_elbo_equals_the_general_path(inference, combine, kl, samples, free_bits):
    model, objective = make(inference, combine, activation="relu", name="elbo",
                            samples=samples, kl=kl, free_bits=free_bits, warmup_epochs=2.0)
    assert_same(model, objective, batch(), Progress(step=3, epoch=1.0))


@pytest.mark.parametrize("inference,combine", SCHEMES)
def test_fused_three_layers_and_labels_equal_the_general_path(inference, combine):
    model, objective = make(inference, combine, sizes=(5, 4, 2), classes=3, name="iwae",
                            samples=4)
    assert_same(model, objective, batch(classes=3), Progress(step=3, epoch=1.0))
    assert_same(model, objective, batch(), Progress(step=3, epoch=1.0))  # no labels: 1/C


def test_fused_path_draws_each_shards_noise():
    """Under a 2-process shard the fused path's draws are the general path's, per rank."""
    model, objective = make("top-down", "ladder", name="iwae", samples=3)
    x = batch(8)
    for rank in (0, 1):
        with rng.sharded(rng.Shard(rank, 2)):
            assert_same(model, objective, x[rank * 4:(rank + 1) * 4], Progress(step=1, epoch=1.0))


def test_fused_nodes_backward_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(4, 3, generator=g), torch.randn(4, generator=g),
              torch.randn(6, 4, generator=g), torch.randn(6, generator=g)]
    params = [p.double().requires_grad_(True) for p in params]
    a = torch.randn(5, 3, generator=g).double().requires_grad_(True)
    for act in ("relu", "tanh"):
        assert torch.autograd.gradcheck(lambda a, *p, act=act: _FusedMLP.apply(a, act, True, *p),
                                        (a, *params))
    x = (torch.rand(2, 6, generator=g) < 0.5).double()
    z = torch.randn(6, 3, generator=g).double().requires_grad_(True)  # K=3 x B=2 rows
    assert torch.autograd.gradcheck(
        lambda z, *p: _FusedBernoulliDecoder.apply(z, x, 3, "tanh", True, *p), (z, *params))


def test_train_fused_false_and_other_models_keep_the_general_path():
    model, _ = make("top-down", "ladder")
    assert isinstance(layered_plan(model), LayeredPlan)
    off = build_objective(ObjectiveConfig(name="iwae"), EVENT, fused=False)
    torch.manual_seed(7)
    off(model, batch(), Progress(step=1, epoch=1.0)).loss.backward()
    assert not off.trains_fused(model)
    torch.manual_seed(0)
    gaussian = build_model(ModelConfig(latent_layers=[4, 2], likelihood="gaussian"), EVENT)
    assert layered_plan(gaussian) is None
    elu = build_model(ModelConfig(latent_layers=[4, 2], activation="elu"), EVENT)
    assert layered_plan(elu) is None
    hooked, _ = make("bottom-up", "ladder")
    hooked.down[0].register_forward_hook(lambda *args: None)
    assert layered_plan(hooked) is None


def test_a_hierarchical_run_trains_the_same_with_the_fused_path_on_or_off(tmp_path):
    import json

    from tiny import make_npz, tiny_config
    from vaelab.api import fit

    data = make_npz(tmp_path / "d.npz", n=128)
    runs = {}
    for fused in (True, False):
        config = tiny_config(data, "train.epochs=2", "model.latent_layers=[4,2]",
                             "model.inference=top-down", "model.layer_hidden=[8]",
                             "objective.name=iwae", "objective.samples=3",
                             f"train.fused={str(fused).lower()}")
        runs[fused] = fit(config, out=tmp_path / f"fused-{fused}", pictures=False)
    for fused, run in runs.items():
        step = json.loads((run.path / "summary.json").read_text())["training_step"]
        assert step.startswith("fused") == fused, step
    on, off = runs[True].model.state_dict(), runs[False].model.state_dict()
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=1e-3, atol=1e-4, msg=name)
