"""Each private PyTorch entry point (torch_private.py) against its public fallback: the
fallback is forced with ``public_only`` and must give the same results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.build import build_model, build_objective
from vaelab.config import ModelConfig, ObjectiveConfig, TrainConfig
from vaelab.inference.fused_elbo import fused_gaussian_bernoulli_elbo, fused_plan
from vaelab.models import fastlinear, torch_private
from vaelab.models.torch_private import public_only
from vaelab.schedules import Progress
from vaelab.training.trainer import Trainer


def tensors(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in [(3, 4), (7,), (2, 2, 5)]]


def test_fallback_is_taken_inside_public_only_and_restored_after():
    assert torch_private.private_enabled()
    with public_only():
        assert not torch_private.private_enabled()
        assert torch_private.onednn_linear_op() is None
        assert not fastlinear.onednn_for(torch.ones(1))
    assert torch_private.private_enabled()


def test_tensor_norms_and_scale_match_the_public_path():
    private = torch_private.tensor_norms(tensors())
    with public_only():
        public = torch_private.tensor_norms(tensors())
    torch.testing.assert_close(torch.stack(private), torch.stack(public))
    a, b = tensors(1), tensors(1)
    torch_private.scale_(a, 0.3)
    with public_only():
        torch_private.scale_(b, 0.3)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_activation_backward_matches_the_public_path(act):
    g, y = tensors(2)[0], tensors(3)[0]
    h = torch.relu(y) if act == "relu" else torch.tanh(y)
    fn = torch_private.relu_backward if act == "relu" else torch_private.tanh_backward
    private = fn(g, h)
    with public_only():
        public = fn(g, h)
    torch.testing.assert_close(private, public)
    y.requires_grad_(True)  # and both are autograd's own gradient
    (torch.relu(y) if act == "relu" else torch.tanh(y)).backward(g)
    torch.testing.assert_close(public, y.grad)


def test_hooked_or_wrapped_modules_are_not_plain():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert torch_private.plain_module(net)
    with public_only():  # no private hook dicts: assume hooks, take the general path
        assert not torch_private.plain_module(net)
    handle = net[0].register_forward_hook(lambda *args: None)
    assert not torch_private.plain_module(net)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert not torch_private.plain_module(net)
    finally:
        handle.remove()
    assert torch_private.plain_module(net)


@pytest.mark.parametrize("act", ["none", "relu", "tanh"])
def test_linear_pointwise_matches_f_linear(act):
    a, w, b = torch.randn(9, 5), torch.randn(4, 5), torch.randn(4)
    private = torch_private.linear_pointwise(a, w, b, act)
    with public_only():
        public = torch_private.linear_pointwise(a, w, b, act)
    torch.testing.assert_close(private, public, rtol=1e-5, atol=1e-5)


def test_fastlinear_gradients_match_the_public_path():
    torch.manual_seed(0)
    layer = fastlinear.Linear(6, 3)
    x = torch.randn(8, 6, requires_grad=True)

    def grads():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).square().sum().backward()
        return [x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]

    private = grads()
    with public_only():
        public = grads()
    for p, q in zip(private, public, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


EVENT = (1, 6, 6)


def default_like():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=[16]), EVENT)
    return model, build_objective(ObjectiveConfig(), EVENT)


def test_fused_elbo_internals_match_with_private_entry_points_off():
    """The fused backward with oneDNN and the one-kernel activation gradients, against the
    same backward through F.linear and the public activation gradients."""
    model, _ = default_like()
    plan = fused_plan(model)
    assert plan is not None
    x = (torch.rand(10, *EVENT, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    eps = torch.randn(10, 3, generator=torch.Generator().manual_seed(2))

    def run():
        model.zero_grad(set_to_none=True)
        loss, rec, kl = fused_gaussian_bernoulli_elbo(plan, x, eps, 0.5)
        loss.backward()
        return [loss, rec, kl, *(p.grad.clone() for p in model.parameters())]

    private = run()
    with public_only():
        public = run()
    for p, q in zip(private, public, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_a_trainer_step_is_the_same_with_private_entry_points_off():
    """Everything a default step uses (fused ELBO, oneDNN, foreach norms, gradient clipping)
    against the public path: the same parameters after two steps."""
    x = (torch.rand(16, *EVENT, generator=torch.Generator().manual_seed(1)) < 0.4).float()

    def train() -> list[torch.Tensor]:
        model, objective = default_like()

        def step_fn(batch, progress):
            out = objective(model, batch, progress)
            return out.loss, out.metrics()

        trainer = Trainer(TrainConfig(grad_clip=0.5, progress=False),
                          nn.ModuleList([model, objective]), step_fn)
        torch.manual_seed(3)
        for step in range(2):
            trainer._step(x, Progress(step=step, epoch=0.0))
        return [p.detach().clone() for p in model.parameters()]

    private = train()
    with public_only():
        public = train()
    for p, q in zip(private, public, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_conv_networks_give_the_same_numbers_in_channels_last_layout(monkeypatch):
    """networks.CHANNELS_LAST only changes the memory order of the feature maps."""
    from vaelab.models import networks

    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=[8], channels=[4, 6], encoder="conv",
                                    decoder="conv"), (1, 10, 10))
    x = torch.rand(5, 1, 10, 10, generator=torch.Generator().manual_seed(1))

    def outputs():
        model.zero_grad(set_to_none=True)
        feats = model.encoder(x)
        out = model.decoder(feats[:, :3])
        out.square().sum().backward()
        return [out.contiguous(), *(p.grad.clone() for p in model.parameters())]

    monkeypatch.setattr(networks, "CHANNELS_LAST", False)
    nchw = outputs()
    monkeypatch.setattr(networks, "CHANNELS_LAST", True)
    nhwc = outputs()
    for a, b in zip(nchw, nhwc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
