"""Checkpoints: step files with last/best links and pruning, every random state saved in a
form ``weights_only`` loads, and clear errors (with nothing overwritten) for a corrupt or
truncated checkpoint, one from another config, or another world size."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.api import fit
from vaelab.config import load_config
from vaelab.rng import rng_states, set_rng_states
from vaelab.training.runs import (
    Checkpoints,
    RunDir,
    RunError,
    atomic_link,
    check_resumable,
    checkpoint_stamp,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_states()})
    expected = (torch.rand(3), np.random.normal(size=3), [random.random() for _ in range(3)])
    set_rng_states(load_checkpoint(path)["rng"])  # loads with weights_only=True
    again = (torch.rand(3), np.random.normal(size=3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_step_files_last_best_and_pruning(tmp_path):
    ck = Checkpoints(tmp_path / "checkpoints")
    for step in (1, 2, 3, 4):
        ck.save({"step": step}, step, best=step == 2, keep=2)
    assert [p.name for p in ck.step_files()] == ["step-000000003.pt", "step-000000004.pt"]
    assert os.path.samefile(ck.last, ck.step_path(4))  # a hard link, not a second write
    assert load_checkpoint(ck.best)["step"] == 2  # kept although its step file was pruned
    assert load_checkpoint(ck.last)["step"] == 4
    ck.save({"step": 5}, 5, keep=0)  # keep=0: last.pt written directly, no step file
    assert load_checkpoint(ck.last)["step"] == 5 and not ck.step_path(5).exists()


def test_link_falls_back_to_an_atomic_copy(tmp_path, monkeypatch):
    src = tmp_path / "a.pt"
    save_checkpoint(src, {"v": 1})

    def no_links(*args, **kwargs):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    atomic_link(src, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt") == {"v": 1}
    assert not os.path.samefile(src, tmp_path / "last.pt")


def test_leftovers_of_a_killed_write_are_removed(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save({"v": 1}, 1)
    (tmp_path / ".step-000000002.pt.abc.tmp").write_bytes(b"half a checkp")
    (tmp_path / ".last.pt.def.tmp").write_bytes(b"")
    assert sorted(p.name for p in ck.remove_partial()) == [".last.pt.def.tmp",
                                                           ".step-000000002.pt.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-000000001.pt"]


def test_torn_last_metrics_line_is_ignored_but_a_damaged_middle_is_not(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert run.read_metrics() == [{"epoch": 1}, {"epoch": 2}]
    run.metrics_path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(RunError, match="line 2 is not JSON"):
        run.read_metrics()


def test_fingerprint_ignores_runtime_keys_only():
    base = load_config()
    same = load_config(overrides=["train.progress=false", "train.threads=1", "eval.iw_samples=7",
                                  "train.epochs=99", "train.checkpoint_every_steps=5"])
    other = load_config(overrides=["model.latent_dim=3"])
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(other)
    stamp = checkpoint_stamp(other, 1)
    with pytest.raises(RunError, match=r"model\.latent_dim: 3 in the checkpoint, 20 in the"):
        check_resumable(stamp, Path("last.pt"), base, 1)
    with pytest.raises(RunError, match=r"4-process run, but this run has 1 process.*--nproc 4"):
        check_resumable(checkpoint_stamp(base, 4), Path("last.pt"), base, 1)
    with pytest.raises(RunError, match="no config fingerprint"):
        check_resumable({}, Path("last.pt"), base, 1)


def _as_written_before(stamp: dict, key: str) -> dict:
    """``stamp`` as a vaelab without the field ``key`` (section.name) would have written it."""
    section, name = key.split(".")
    old = {**stamp, "config": {s: dict(v) for s, v in stamp["config"].items()}}
    del old["config"][section][name]
    old["config_hash"] = "0123456789abcdef"  # the older fingerprint's hash differs
    return old


def test_a_checkpoint_from_before_a_field_existed_resumes_at_its_default():
    """Upgrading vaelab adds config fields; a run written before resumes when the new field
    is at its default (what the old run computed), and not when it was set otherwise."""
    base = load_config()
    old = _as_written_before(checkpoint_stamp(base, 1), "model.residual_blocks")
    check_resumable(old, Path("last.pt"), base, 1)  # no error
    changed = load_config(overrides=["model.encoder=conv", "model.residual_blocks=1"])
    old = _as_written_before(checkpoint_stamp(changed, 1), "model.residual_blocks")
    with pytest.raises(RunError, match=r"model\.residual_blocks: '<absent>' in the checkpoint, "
                                       r"1 in the config"):
        check_resumable(old, Path("last.pt"), changed, 1)


# ---- resuming a real run with a bad checkpoint: clear error, nothing overwritten -----------

@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_run(tmp_path: Path, name: str, *extra: str) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    if not data.exists():
        np.savez(data, x_train=(rng.random((24, 1, 4, 4)) * 255).astype(np.uint8),
                 x_valid=(rng.random((8, 1, 4, 4)) * 255).astype(np.uint8),
                 x_test=(rng.random((8, 1, 4, 4)) * 255).astype(np.uint8))
    sets = [f"data.name={data}", "model.hidden=[4]", "model.latent_dim=2", "train.epochs=1",
            "train.batch_size=8", "train.threads=1", "train.progress=false",
            "eval.iw_samples=0", *extra]
    fit(load_config(overrides=sets), out=tmp_path / name, pictures=False)
    return tmp_path / name, sets


def snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def damage_truncate(run: Path, other: Path) -> str:
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.unlink()  # break the hard link, so the step file stays intact
    last.write_bytes(data[: len(data) // 2])
    return "corrupt or truncated"


def damage_garbage(run: Path, other: Path) -> str:
    last = run / "checkpoints" / "last.pt"
    last.unlink()
    last.write_bytes(os.urandom(4096))
    return "corrupt or truncated"


def damage_foreign(run: Path, other: Path) -> str:
    last = run / "checkpoints" / "last.pt"
    last.unlink()
    last.write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    return r"different config \(model.latent_dim: 3 in the checkpoint, 2 in the config\)"


def damage_world(run: Path, other: Path) -> str:
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["world_size"] = 2
    last.unlink()
    save_checkpoint(last, state)
    return r"2-process run, but this run has 1 process"


def damage_missing(run: Path, other: Path) -> str:
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    return "no checkpoint yet"


@pytest.mark.parametrize("damage", [damage_truncate, damage_garbage, damage_foreign,
                                    damage_world, damage_missing])
def test_bad_checkpoint_on_resume_is_a_clear_error_and_nothing_is_written(
        tmp_path, one_thread, damage):
    run, _ = tiny_run(tmp_path, "run")
    other, _ = tiny_run(tmp_path, "other", "model.latent_dim=3")
    message = damage(run, other)
    before = snapshot(run)
    with pytest.raises(RunError, match=message):
        fit(load_config(), resume=run, pictures=False)
    assert snapshot(run) == before


def test_cli_reports_a_truncated_checkpoint_in_one_line(tmp_path, one_thread, capsys):
    from vaelab.cli import main

    run, _ = tiny_run(tmp_path, "run")
    damage_truncate(run, run)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt or truncated" in err and "step-" in err
