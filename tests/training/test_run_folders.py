"""Run folders: file modes follow the umask, --overwrite starts empty and loses nothing on a
failed start, --resume --set extends a finished run and refuses other changes."""

from __future__ import annotations

import json
import os
import stat

import pytest

import vaelab
from tiny import TINY_OVERRIDES, make_npz, tiny_config
from vaelab.cli import main


@pytest.fixture
def data(tmp_path):
    return make_npz(tmp_path / "tiny.npz")


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_are_created_with_the_users_umask(tmp_path, data):
    old = os.umask(0o022)
    try:
        run = vaelab.fit(tiny_config(data, "train.keep_checkpoints=2"), out=tmp_path / "run")
    finally:
        os.umask(old)
    paths = [p for p in run.path.rglob("*")]
    assert any(p.suffix == ".pt" for p in paths) and any(p.suffix == ".png" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


def test_overwrite_starts_from_an_empty_folder(tmp_path, data):
    out = tmp_path / "run"
    vaelab.fit(tiny_config(data, "train.snapshot_every=1", "train.epochs=2",
                           "train.keep_checkpoints=5"), out=out)
    assert (out / "animation.gif").is_file()
    old_steps = {p.name for p in (out / "checkpoints").glob("step-*.pt")}
    assert len(old_steps) == 2
    vaelab.fit(tiny_config(data, "model.latent_dim=3", "train.keep_checkpoints=5"), out=out,
               overwrite=True)
    names = {p.name for p in out.rglob("*")}
    assert "animation.gif" not in names and "snapshots" not in names
    new_steps = {p.name for p in (out / "checkpoints").glob("step-*.pt")}
    assert len(new_steps) == 1  # one epoch: the old run's step files are gone
    assert len(json.loads((out / "meta.json").read_text())["event_shape"]) == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    report = (out / "report.html").read_text()
    assert "data:image/gif" not in report and "no posterior snapshots in this run" in report
    assert not (tmp_path / ".run.replaced").exists()  # deleted after the first checkpoint


def test_a_failed_overwrite_puts_the_old_run_back(tmp_path, data, monkeypatch):
    out = tmp_path / "run"
    vaelab.fit(tiny_config(data), out=out, pictures=False)
    before = files(out)

    def crash(self, train_x, epochs=None):
        raise RuntimeError("boom before the first checkpoint")

    monkeypatch.setattr(vaelab.api.Trainer, "fit", crash)
    with pytest.raises(RuntimeError, match="boom"):
        vaelab.fit(tiny_config(data, "model.latent_dim=3"), out=out, overwrite=True,
                   pictures=False)
    assert files(out) == before
    assert not (tmp_path / ".run.replaced").exists()


def sets(*items):
    return [a for item in items for a in ("--set", item)]


def test_resume_set_epochs_extends_a_finished_run(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out),
                 *sets(f"data.name='{data}'", *TINY_OVERRIDES)]) == 0
    assert main(["train", "--resume", str(out), "--set", "train.epochs=2"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert "epochs = 2" in (out / "config.toml").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2

    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--set", "model.latent_dim=5",
                 "--set", "train.lr=0.1", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "model.latent_dim: 2 -> 5" in err and "train.lr: 0.001 -> 0.1" in err
    assert "train.epochs" not in err.split("differ")[1]  # epochs may change: not listed
    assert "epochs = 2" in (out / "config.toml").read_text()  # refused before any write


def test_resuming_a_finished_run_keeps_its_evaluation_unless_asked(tmp_path, data, capsys):
    out = tmp_path / "run"
    vaelab.fit(tiny_config(data), out=out, pictures=False)
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").write_bytes(before.replace(b'"epochs": 1', b'"epochs": 1 '))
    marked = (out / "summary.json").read_bytes()
    assert main(["train", "--resume", str(out)]) == 0
    assert (out / "summary.json").read_bytes() == marked  # not evaluated again
    assert "test ELBO" in capsys.readouterr().out  # its numbers are still reported
    assert main(["train", "--resume", str(out), "--evaluate"]) == 0
    assert (out / "summary.json").read_bytes() != marked
