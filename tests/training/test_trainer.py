"""The generic trainer: divergence handling, schedules, and atomic checkpoint writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.config import TrainConfig
from vaelab.training.runs import RunDir, RunError, atomic_write, load_checkpoint, save_checkpoint
from vaelab.training.trainer import Trainer, TrainingDiverged


def make_trainer(bad_at: set[int], bad_term: str = "kl", grad_nan: bool = False, **cfg):
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    calls = {"n": 0}

    def step_fn(batch, progress):
        i = calls["n"]
        calls["n"] += 1
        out = module(batch).squeeze(-1)
        terms = {"rec": out.detach(), "kl": out.detach().abs()}
        loss = out.pow(2).mean()
        if i in bad_at:
            if grad_nan:
                # value 0, gradient d/db sqrt(|b - b0|) = inf at b0: finite loss, bad grad
                loss = loss + (module.bias - module.bias.detach()).abs().sqrt().sum()
            else:
                terms[bad_term] = terms[bad_term] * float("nan")
                loss = loss * float("nan")
        return loss, terms

    config = TrainConfig(**{"epochs": 1, "batch_size": 4, "progress": False, **cfg})
    return Trainer(config, module, step_fn), module


def test_a_nonfinite_loss_skips_the_step_and_names_the_term(caplog):
    trainer, module = make_trainer({1}, bad_term="kl")
    trainer.fit(torch.randn(16, 3))
    assert "non-finite loss" in caplog.text and "kl" in caplog.text
    assert trainer.state.step == 4 and trainer.state.bad_steps == 0
    assert torch.isfinite(module.weight).all()


def test_a_nonfinite_gradient_names_the_parameter(caplog):
    trainer, module = make_trainer({0}, grad_nan=True)
    trainer.fit(torch.randn(16, 3))
    text = caplog.text
    assert "non-finite gradient" in text and "'bias'" in text
    assert torch.isfinite(module.bias).all()


def test_stops_after_too_many_bad_steps_in_a_row():
    trainer, _ = make_trainer({0, 1, 2}, max_bad_steps=3)
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row.*train.lr"):
        trainer.fit(torch.randn(32, 3))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_lr_schedules_run(schedule):
    trainer, _ = make_trainer(set(), lr_schedule=schedule, epochs=3)
    trainer.fit(torch.randn(8, 3))
    lrs = [r["lr"] for r in trainer.state.history]
    assert len(lrs) == 3
    assert (lrs[0] == lrs[-1]) == (schedule == "constant")


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="train.lr_schedule"):
        make_trainer(set(), lr_schedule="warmup")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})

    def broken(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_run_folder_refuses_to_be_reused(tmp_path):
    RunDir.create(tmp_path / "r")
    (tmp_path / "r" / "config.toml").write_text("")
    with pytest.raises(RunError, match="already exists"):
        RunDir.create(tmp_path / "r")
