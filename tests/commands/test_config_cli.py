"""Discoverability: --version, the shipped example configs, config show / keys."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vaelab.cli import main
from vaelab.commands.config import field_docs
from vaelab.commands.configs import shipped_configs, summary_line
from vaelab.config import Config, load_config

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("vaelab ") and "torch " in out


def test_the_package_ships_every_example_config_of_the_repo(capsys):
    names = {name for name, _ in shipped_configs()}
    in_repo = {p.relative_to(REPO_CONFIGS).with_suffix("").as_posix()
               for p in REPO_CONFIGS.rglob("*.toml")}
    assert names == in_repo and "default" in names
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(names)
    default = next(line for line in lines if line.startswith("default "))
    assert "The default model" in default


def test_a_shipped_config_is_found_by_name():
    by_name = load_config("default", ["train.epochs=2"])
    by_path = load_config(REPO_CONFIGS / "default.toml", ["train.epochs=2"])
    assert by_name == by_path and by_name.train.epochs == 2
    assert load_config("seeds/002_conv").model.encoder == "conv"
    with pytest.raises(ValueError, match="vaelab configs"):
        load_config("no-such-config")


@pytest.mark.parametrize("text, expected", [
    ("# IWAE objective, K=5\n# One stochastic layer, the IWAE paper's setting.\n",
     "IWAE objective, K=5"),
    ("# Straight-through Gumbel-softmax (Jang et al. 2017): the decoder sees the hard\n"
     "# code. Otherwise as before.\n",
     "Straight-through Gumbel-softmax (Jang et al. 2017): the decoder sees the hard code."),
    ('# Seed 003 ("07. Variational Autoencoders" notes): a conv VAE. More.\n',
     'Seed 003 ("07. Variational Autoencoders" notes): a conv VAE.'),
])
def test_summary_line(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text + "[train]\n")
    assert summary_line(path) == expected


def test_config_show_prints_the_resolved_config_with_every_fields_meaning(capsys):
    assert main(["config", "show", "-c", "default", "--set", "train.epochs=3",
                 "--set", "model.hidden=[64, 32]"]) == 0
    out = capsys.readouterr().out
    parsed = tomllib.loads(out)  # valid TOML: the comments are TOML comments
    assert parsed == load_config("default", ["train.epochs=3", "model.hidden=[64, 32]"]
                                 ).to_dict()
    assignments = [line for line in out.splitlines() if " = " in line
                   and not line.startswith("#")]
    assert len(assignments) == sum(len(v) for v in Config().to_dict().values())
    assert all("  # " in line for line in assignments)
    assert "hidden = [64, 32]  " in out


def test_config_keys_lists_every_key_with_type_default_and_meaning(capsys):
    docs = {d.key: d for d in field_docs()}
    expected = {f"{s}.{k}" for s, v in Config().to_dict().items() for k in v}
    assert set(docs) == expected
    assert all(d.meaning for d in docs.values()), [k for k, d in docs.items() if not d.meaning]
    assert docs["train.epochs"].type == "int" and docs["train.epochs"].default == 30
    assert docs["model.hidden"].type == "list[int]"
    # a comment continued on the next line is part of the meaning
    assert "bounds memory" in docs["eval.sample_chunk"].meaning
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(expected) + 1
    assert any(line.startswith("train.epochs ") and " int " in line and " 30 " in line
               for line in out)
