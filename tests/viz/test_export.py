"""`vaelab export`: a small pickle-free folder that load_run reads back to the same model."""

from __future__ import annotations

import json

import pytest
import torch

import vaelab
from tiny import make_npz, tiny_config
from vaelab.cli import main
from vaelab.training.weights import EXPORT_FILES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = vaelab.fit(tiny_config(make_npz(root / "data.npz"), "model.latent_dim=3"),
                     out=root / "run")
    assert main(["export", str(run.path), str(root / "model")]) == 0
    return run, root / "model"


def test_export_writes_just_the_shareable_files_and_no_pickle(exported):
    run, out = exported
    assert {p.name for p in out.iterdir()} == set(EXPORT_FILES)
    for path in out.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", path  # neither pickle nor torch zip
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vaelab"] and meta["torch"] == torch.__version__
    assert json.loads((run.path / "meta.json").read_text())["vaelab"] == meta["vaelab"]
    assert (run.path / "model.safetensors").is_file()  # every run has its weights file


def test_load_run_of_the_export_gives_identical_outputs(exported):
    run, out = exported
    again = vaelab.load_run(out)
    x = run.data("test")
    q, q2 = run.model.encode(x), again.model.encode(x)
    assert torch.equal(q.mean, q2.mean) and torch.equal(q.stddev, q2.stddev)
    assert torch.equal(run.model.decode(q.mean).mean, again.model.decode(q2.mean).mean)
    torch.manual_seed(5)
    a = run.model.sample(4)
    torch.manual_seed(5)
    assert torch.equal(a, again.model.sample(4))
    assert run.evaluate("test", iw_samples=8) == again.evaluate("test", iw_samples=8)


def test_the_model_card_follows_the_hub_conventions(exported):
    run, out = exported
    card = (out / "README.md").read_text()
    summary = json.loads((run.path / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: vaelab\n")
    assert f"{summary['test']['elbo']:.2f} ± {summary['test']['elbo_stderr']:.2f}" in card
    assert "## Objective audit" in card and "| likelihood | bernoulli |" in card
    assert "(samples.png)" in card and "{'" not in card  # a table, not a Python dict
    hub = pytest.importorskip("huggingface_hub")
    assert hub.ModelCard.load(out / "README.md").data.library_name == "vaelab"


def test_load_run_pulls_hf_names_through_huggingface_hub(exported, monkeypatch):
    """Offline: snapshot_download is replaced by a stand-in returning the local folder."""
    hub = pytest.importorskip("huggingface_hub")
    _, out = exported
    asked = {}

    def snapshot_download(repo_id, allow_patterns=None, **_):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(out)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    run = vaelab.load_run("hf://someone/tiny-vae")
    assert asked["repo_id"] == "someone/tiny-vae"
    assert "model.safetensors" in asked["allow_patterns"]
    assert tuple(run.model.latent_shape) == (3,)


def test_export_refuses_a_folder_with_other_files(exported, tmp_path, capsys):
    run, _ = exported
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export", str(run.path), str(tmp_path)]) == 2
    assert "holds other files" in capsys.readouterr().err
