"""Adam's negligible moments set to 0 (training/moments.py): only values below the floors
change, a run gets no subnormal moments where it otherwise would, and its weights stay bit
for bit what they are without the pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.config import TrainConfig
from vaelab.training import moments
from vaelab.training.trainer import Trainer

TINY = torch.finfo(torch.float32).tiny
EVERY = moments.EVERY  # as shipped (the runs below patch it)


def subnormal_moments(optimizer: torch.optim.Optimizer) -> int:
    return sum(int(((t != 0) & (t.abs() < TINY)).sum())
               for state in optimizer.state.values()
               for key, t in state.items() if key in moments.FLOORS)


def test_only_moments_below_the_floors_are_set_to_zero():
    p = nn.Parameter(torch.zeros(5))
    opt = torch.optim.Adam([p])
    m = torch.tensor([1e-31, -1e-31, 2e-30, -3.0, 1e-40])
    v = torch.tensor([1e-37, 5e-36, 1e-20, 1.0, 1e-40])
    opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    moments.zero_negligible_moments(opt)
    assert opt.state[p]["exp_avg"].tolist() == [0.0, 0.0, m[2].item(), -3.0, 0.0]
    assert opt.state[p]["exp_avg_sq"].tolist() == [0.0, v[1].item(), v[2].item(), 1.0, 0.0]


def train(steps: int, every: int, monkeypatch: pytest.MonkeyPatch) -> Trainer:
    """A small ReLU net whose input 0 is on for the first 20 steps only: afterwards its
    first-layer gradients are exactly zero and Adam's m there decays by 0.9 a step."""
    monkeypatch.setattr(moments, "EVERY", every)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    calls = {"n": 0}

    def step_fn(batch, progress):
        on = torch.tensor([float(calls["n"] < 20), 1.0, 1.0, 1.0])
        calls["n"] += 1
        out = module(batch[:, :4] * on).squeeze(-1)
        loss = (out - batch[:, 4]).square().mean()
        return loss, {"loss": loss.detach()}

    data = torch.randn(4 * steps, 5, generator=torch.Generator().manual_seed(1))
    trainer = Trainer(TrainConfig(epochs=1, batch_size=4, progress=False, lr=1e-3), module,
                      step_fn)
    trainer.fit(data)
    assert trainer.state.step == steps
    return trainer


def test_a_run_keeps_no_subnormal_moments_and_the_same_weights(monkeypatch):
    steps = 880  # m of the weights from input 0 is then in the subnormal range
    plain = train(steps, every=10**9, monkeypatch=monkeypatch)
    assert subnormal_moments(plain.optimizer) > 0  # the case the pass exists for
    cleared = train(steps, every=EVERY, monkeypatch=monkeypatch)
    assert subnormal_moments(cleared.optimizer) == 0
    for a, b in zip(plain.module.parameters(), cleared.module.parameters(), strict=True):
        assert torch.equal(a, b)
