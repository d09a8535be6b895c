"""Crash safety: SIGKILL at random moments (and inside a checkpoint write) always leaves a
loadable last checkpoint, and resuming from it ends bit-identical to an uninterrupted run.

Runs are single-process, CPU, one thread, so every float operation is reproducible and
equality is checked with ``torch.equal``, not a tolerance.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.api import fit
from vaelab.config import load_config
from vaelab.training.runs import RunDir, load_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")

# train (argv: out, "new", pause, overrides...) or resume (argv: out, "resume", pause)
# without pictures; pause > 0: sleep that long after each checkpoint's bytes are written to
# its temporary file, before fsync and rename (the window a kill must survive), by wrapping
# torch.save in this process only (no hook in vaelab itself)
TRAIN_SCRIPT = """
import sys, time
import torch
from vaelab.api import fit
from vaelab.config import load_config
out, mode, pause, overrides = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
if pause > 0:
    save = torch.save
    def slow_save(obj, handle, *args, **kwargs):
        save(obj, handle, *args, **kwargs)
        handle.flush()
        time.sleep(pause)
    torch.save = slow_save
config = load_config(overrides=overrides)
if mode == "resume":
    fit(config, resume=out, pictures=False)
else:
    fit(config, out=out, pictures=False)
"""


def tiny_data(path: Path, n_train: int = 96) -> Path:
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return (rng.random((n, 1, 6, 6)) * 255).astype(np.uint8)

    np.savez(path, x_train=images(n_train), x_valid=images(16), x_test=images(16))
    return path


def overrides(data: Path, **extra: object) -> list[str]:
    values = {"data.name": str(data), "model.hidden": "[8]", "model.latent_dim": 2,
              "objective.samples": 2, "train.batch_size": 8, "train.epochs": 8,
              "train.threads": 1, "train.progress": "false", "eval.iw_samples": 0,
              "train.checkpoint_every_steps": 1, "train.keep_checkpoints": 2, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def spawn(out: Path, mode: str, sets: list[str], pause: float | None = None
          ) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(out), mode,
                             str(pause or 0), *sets],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def saved_step(path: Path) -> int:
    return int(load_checkpoint(path)["trainer"]["step"])


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll until ``condition()``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("training made no progress within the timeout")


def temporaries(run: Path) -> list[str]:
    folder = run / "checkpoints"
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() \
        else []


def final_state(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


def assert_same_training(a: dict, b: dict) -> None:
    assert a["trainer"]["step"] == b["trainer"]["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["data_rng"], b["data_rng"])


def bounds(run: Path) -> list[tuple[int, float]]:
    return [(r["epoch"], r["train_bound"]) for r in RunDir(run).read_metrics()]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    data = tiny_data(tmp_path / "tiny.npz")
    sets = overrides(data)
    reference = spawn(tmp_path / "ref", "new", sets)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    rng = random.Random(20261121)
    # each cycle starts (or resumes) training, lets it make progress, then SIGKILLs it;
    # "write" cycles are killed while a checkpoint sits written but not yet renamed
    cycles = ["random", "write", "random"]
    killed = []
    for i, mode in enumerate(cycles):
        start_step = saved_step(last) if last.exists() else -1
        proc = spawn(run, "new" if i == 0 else "resume", sets,
                     pause=2.0 if mode == "write" else None)
        if mode == "write":
            alive = wait_for(lambda: any(n.startswith(".step-") for n in temporaries(run)), proc)
        else:
            alive = wait_for(lambda s=start_step: last.exists() and saved_step(last) > s, proc)
            time.sleep(rng.uniform(0.0, 0.15))
            alive = proc.poll() is None
        assert alive, f"cycle {i} ended before it was killed: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        state = load_checkpoint(last)  # always loadable
        killed.append((mode, int(state["trainer"]["step"]), int(state["trainer"]["batch"]),
                       temporaries(run)))
    # the write cycles were really killed inside a write: a temporary step file was left
    assert all(tmps for mode, *_, tmps in killed if mode == "write"), killed
    proc = spawn(run, "resume", sets)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    proc.stderr.close()
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    reference.stderr.close()
    assert temporaries(run) == []  # the resume cleared the killed writes' leftovers
    assert_same_training(final_state(tmp_path / "ref"), final_state(run))
    assert bounds(run) == bounds(tmp_path / "ref")  # epoch metrics too, bit for bit
    assert [e for e, _ in bounds(run)] == list(range(1, 9))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_resume_from_any_mid_epoch_checkpoint_is_bit_identical(tmp_path, one_thread):
    """In-process: restart from an intermediate step file (as if the run had died right
    after writing it) and finish; the result equals the uninterrupted run exactly."""
    data = tiny_data(tmp_path / "tiny.npz", n_train=40)  # 5 batches per epoch
    config = load_config(overrides=overrides(data, **{"train.epochs": 3,
                                                      "train.checkpoint_every_steps": 3,
                                                      "train.keep_checkpoints": 10}))
    full = tmp_path / "full"
    fit(config, out=full, pictures=False)
    steps = RunDir(full).checkpoints.step_files()
    assert [int(p.stem.split("-")[1]) for p in steps] == [3, 5, 6, 9, 10, 12, 15]
    for mid in ("step-000000003.pt", "step-000000012.pt"):  # batch 3 of epoch 1, 2 of 3
        crashed = tmp_path / f"from-{mid}"
        shutil.copytree(full, crashed)
        shutil.copyfile(full / "checkpoints" / mid, crashed / "checkpoints" / "last.pt")
        state = load_checkpoint(crashed / "checkpoints" / "last.pt")
        assert state["trainer"]["batch"] in (2, 3)  # really mid-epoch
        fit(config, resume=crashed, pictures=False)
        assert_same_training(final_state(full), final_state(crashed))
        assert bounds(crashed) == bounds(full)
        summary = json.loads((crashed / "summary.json").read_text())
        assert summary["steps"] == 15
