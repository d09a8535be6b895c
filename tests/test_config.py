"""Config files and overrides: types, unknown keys with suggestions, round trips."""

from pathlib import Path

import pytest

from vaelab.config import Config, ConfigError, config_from_dict, load_config, parse_override


def test_overrides_are_typed_toml_literals():
    cfg = load_config(None, ["train.epochs=3", "model.hidden=[64, 32]", "train.lr=3e-4",
                             "model.latent=gaussian-full", "train.progress=false"])
    assert cfg.train.epochs == 3 and cfg.model.hidden == [64, 32]
    assert cfg.train.lr == 3e-4 and cfg.model.latent == "gaussian-full"
    assert cfg.train.progress is False


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match="did you mean 'model.latent_dim'"):
        load_config(None, ["model.latnet_dim=4"])
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(None, ["trian.epochs=4"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train.epochs=1.5: must be an integer >= 1"):
        load_config(None, ["train.epochs=1.5"])
    with pytest.raises(ConfigError, match=r"model.hidden=5: must be a list"):
        load_config(None, ["model.hidden=5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs")


def test_file_then_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 7\n[model]\nlatent_dim = 3\n')
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg.train.epochs == 2 and cfg.model.latent_dim == 3
    cfg.save(tmp_path / "saved.toml")
    import tomllib

    again = config_from_dict(tomllib.loads((tmp_path / "saved.toml").read_text()))
    assert again == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_defaults_are_the_documented_default_model():
    cfg = Config()
    assert cfg.data.name == "mnist" and cfg.model.likelihood == "bernoulli"
    assert cfg.model.latent == "gaussian" and cfg.objective.name == "elbo"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A typo in a shipped config's keys or types fails here, not in a user's first run."""
    cfg = load_config(path)
    assert cfg.train.epochs >= 1
