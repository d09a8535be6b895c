"""Logs of `vaelab train` written to a file: one line per epoch, no progress-bar redraws."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from tiny import TINY_OVERRIDES, make_npz
from vaelab import console
from vaelab.config import TrainConfig
from vaelab.training.trainer import Trainer

SRC = str(Path(__file__).resolve().parents[2] / "src")


def train_to_file(tmp_path: Path, *extra: str) -> str:
    data = make_npz(tmp_path / "tiny.npz")
    sets = [a for o in [f"data.name='{data}'", *TINY_OVERRIDES, "train.epochs=3",
                        "train.progress=true"] for a in ("--set", o)]
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with log.open("w") as handle:  # stdout and stderr both to a file, as `> log 2>&1`
        done = subprocess.run([sys.executable, "-m", "vaelab", "train", "--out",
                               str(tmp_path / "run"), *sets, *extra], stdout=handle,
                              stderr=subprocess.STDOUT, env=env, timeout=300)
    assert done.returncode == 0, log.read_text()
    return log.read_text()


def test_train_to_a_file_logs_one_line_per_epoch_and_no_redraws(tmp_path):
    text = train_to_file(tmp_path)
    assert "\r" not in text and "it/s" not in text  # no tqdm bar was drawn
    lines = [line for line in text.splitlines() if re.search(r" epoch \d+/3: ", line)]
    assert len(lines) == 3, text
    for i, line in enumerate(lines, start=1):
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch " f"{i}/3: train bound -?\\d",
                        line), line
        for part in ("rec ", "KL ", "valid bound ", "images/s", " s"):
            assert part in line, (part, line)
    assert "test ELBO" in text  # the summary follows


def test_quiet_drops_the_epoch_lines(tmp_path):
    text = train_to_file(tmp_path, "--quiet")
    assert "epoch 1/3" not in text and "test ELBO" in text


def test_the_trainer_logs_the_terms_it_is_given_and_knows_no_model(caplog):
    """Score key, bar term and epoch line come from the caller; the default line lists the
    step's own terms, whatever they are called."""
    torch.manual_seed(0)
    module = nn.Linear(3, 1)

    def step_fn(batch, progress):
        out = module(batch).squeeze(-1)
        return out.pow(2).mean(), {"loss": out.detach().pow(2)}

    trainer = Trainer(TrainConfig(epochs=2, batch_size=4), module, step_fn,
                      validate_fn=lambda: {"val_score": 1.0}, score_key="val_score",
                      bar_term="loss")
    with caplog.at_level("INFO", logger="vaelab"):
        trainer.fit(torch.randn(16, 3))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: train_loss ")
    assert "val_score 1" in lines[0] and "images/s" in lines[0]
    assert trainer.state.best == 1.0


def test_log_progress_reports_tenths_of_a_long_loop_only(caplog):
    with caplog.at_level("INFO", logger="vaelab"):
        bar = console.LogProgress(100, "work", after=0.0)
        for _ in range(100):
            bar.update(1)
        quiet = console.LogProgress(100, "short", after=60.0)
        for _ in range(100):
            quiet.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[0].startswith("work: 10/100 (10%)")
    assert lines[-1].startswith("work: 100/100 (100%)")
