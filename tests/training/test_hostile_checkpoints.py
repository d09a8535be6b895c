"""Damaged and hostile checkpoints through every command that loads one, and load_run.

Each damage (truncated, empty, random bytes, a foreign pickle, pickles whose code would make
a marker folder if it ever ran, a valid checkpoint of another model, wrong shapes, wrong
types) is written over a trained run's checkpoints; each command then must exit 2 with one
line naming the checkpoint file, print no traceback, write nothing, and never run the code.
"""

from __future__ import annotations

import fractions
import io
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

import vaelab
from tiny import TINY_OVERRIDES, make_npz, tiny_config
from vaelab.cli import main
from vaelab.training.runs import RunError

MARKER = "PAYLOAD-RAN"  # a folder the payloads would create in the current directory


class Payload:
    """Unpickling this calls os.mkdir(MARKER): code a checkpoint must never run."""

    def __reduce__(self):
        return (os.mkdir, (MARKER,))


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = make_npz(root / "data.npz")
    good = vaelab.fit(tiny_config(data), out=root / "good", pictures=False)
    other = vaelab.fit(tiny_config(data, "model.latent_dim=3", "model.hidden=[8]"),
                       out=root / "other", pictures=False)
    return data, good.path, other.path


def damages(good: Path, other: Path) -> dict[str, bytes]:
    raw = (good / "checkpoints" / "last.pt").read_bytes()
    state = torch.load(good / "checkpoints" / "last.pt", weights_only=True)
    reshaped = {**state, "model": dict(state["model"])}
    name = next(iter(reshaped["model"]))
    reshaped["model"][name] = torch.zeros(*reshaped["model"][name].shape[:-1], 999)
    return {
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "random-bytes": random.Random(1).randbytes(4096),
        "foreign-pickle": pickle.dumps(fractions.Fraction(1, 3)),
        "code-payload-pickle": pickle.dumps({"model": Payload()}, protocol=2),
        "code-payload-torch": saved({"model": {"w": torch.zeros(1)}, "x": Payload()}),
        "another-model": (other / "checkpoints" / "last.pt").read_bytes(),
        "wrong-shapes": saved(reshaped),
        "bare-tensor": saved(torch.zeros(3)),
        "no-model-key": saved({"weights": state["model"]}),
        "model-is-5": saved({"model": 5}),
        "model-not-tensors": saved({"model": {name: "abc"}}),
    }


DAMAGE_NAMES = ["truncated", "empty", "random-bytes", "foreign-pickle", "code-payload-pickle",
                "code-payload-torch", "another-model", "wrong-shapes", "bare-tensor",
                "no-model-key", "model-is-5", "model-not-tensors"]
HOSTILE = {"foreign-pickle", "code-payload-pickle", "code-payload-torch"}
COMMANDS = ["eval", "plot", "report", "explore", "gap", "estimators", "resume", "init_from"]


def damaged_copy(good: Path, folder: Path, payload: bytes) -> Path:
    run = folder / "damaged"
    shutil.copytree(good, run)
    for path in (run / "checkpoints").iterdir():
        path.unlink()  # best.pt and last.pt are hard links: never write through them
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(payload)
    return run


def argv(command: str, run: Path, data: Path, out: Path) -> list[str]:
    sets = [a for item in (f"data.name='{data}'", *TINY_OVERRIDES) for a in ("--set", item)]
    return {"eval": ["eval", str(run), "--iw-samples", "0"],
            "plot": ["plot", str(run)],
            "report": ["report", str(run), "--redraw"],
            "explore": ["explore", str(run), "--port", "0", "--no-browser"],
            "gap": ["gap", str(run), "--n", "2", "--steps", "1", "--iw-samples", "0"],
            "estimators": ["estimators", str(run), "--draws", "2", "--batch", "4"],
            "resume": ["train", "--resume", str(run)],
            "init_from": ["train", "--out", str(out), *sets,
                          "--set", f"train.init_from='{run}'"]}[command]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("damage", DAMAGE_NAMES)
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_refuse_damaged_checkpoints(runs, command, damage, tmp_path, monkeypatch,
                                             capsys):
    data, good, other = runs
    run = damaged_copy(good, tmp_path, damages(good, other)[damage])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAELAB_DEBUG", raising=False)

    def no_server(*args, **kwargs):
        raise AssertionError("the explorer must not start on a damaged checkpoint")

    monkeypatch.setattr("vaelab.viz.explorer.make_server", no_server)
    before = listing(tmp_path)
    code = main(argv(command, run, data, tmp_path / "new"))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out
    assert str(run / "checkpoints") in err, err  # names the file
    if damage in HOSTILE:
        assert "holds Python objects vaelab does not load" in err and "nothing" in err, err
    assert not (tmp_path / MARKER).exists()
    assert listing(tmp_path) == before  # nothing written


@pytest.mark.parametrize("damage", DAMAGE_NAMES)
def test_load_run_refuses_damaged_checkpoints(runs, damage, tmp_path, monkeypatch):
    _, good, other = runs
    run = damaged_copy(good, tmp_path, damages(good, other)[damage])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError) as info:
        vaelab.load_run(run)
    message = str(info.value)
    assert "\n" not in message and str(run / "checkpoints" / "best.pt") in message
    if damage in HOSTILE:
        assert "holds Python objects vaelab does not load" in message
    assert not (tmp_path / MARKER).exists()
