"""Every config field has declared valid values, checked before anything is loaded or written.

The table is not written by hand: it is every field of every section of ``Config``, with the
invalid values its declaration implies (``config.invalid_examples``). A field added without a
declaration (a bare ``int``, ``str``, ...) fails ``test_every_field_declares_its_valid_values``.
Each case runs ``vaelab train --set KEY=VALUE`` through the CLI's own entry point in an empty
folder and checks: exit status 2, one line naming the key, the value and the valid values, no
traceback, no file created. A sample also runs as a real subprocess (``python -m vaelab``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import tomli_w

from tiny import TINY_OVERRIDES, make_npz
from vaelab import config as cfgmod
from vaelab.cli import main
from vaelab.config import Config, ConfigError, describe, invalid_examples, load_config, show

SRC = Path(__file__).resolve().parents[1] / "src"


def fields() -> list[tuple[str, typing.Any]]:
    """(section.key, declared type) of every config field."""
    out = []
    for section in dataclasses.fields(Config):
        hints = cfgmod.section_types(getattr(Config(), section.name))
        out += [(f"{section.name}.{key}", hint) for key, hint in hints.items()]
    return out


CASES = [(key, hint, bad) for key, hint in fields() for bad in invalid_examples(hint)]


def toml_literal(value: typing.Any) -> str:
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def train_argv(npz: Path, *sets: str) -> list[str]:
    argv = ["train", "--out", "run"]
    for item in (f"data.name='{npz}'", *TINY_OVERRIDES, *sets):
        argv += ["--set", item]
    return argv


def test_every_field_declares_its_valid_values():
    undeclared = [key for key, hint in fields() if not invalid_examples(hint)]
    assert not undeclared, ("declare the valid values of these config fields in config.py "
                            f"(Literal, bool, or Annotated with a Range / Text): {undeclared}")
    assert len(fields()) >= 60 and len(CASES) >= 2 * len(fields())


def test_defaults_are_valid():
    from vaelab.build import validate

    validate(Config())


@pytest.mark.parametrize("key,hint,bad", CASES,
                         ids=[f"{k}={show(b)}" for k, _, b in CASES])
def test_invalid_value_is_refused_before_anything_is_written(key, hint, bad, npz, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    code = main(train_argv(npz, f"{key}={toml_literal(bad)}"))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in captured.err + captured.out
    assert err.startswith("vaelab train: error: ")
    assert f"{key}=" in err and show(bad) in err, err
    assert describe(hint) in err, err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("key,bad", [("train.batch_size", "0"),  # refused when loaded
                                     ("train.init_from", "'no/such/run'")])  # when used
def test_subprocess_cli_refuses_bad_values(key, bad, npz, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "VAELAB_NO_DOWNLOAD": "1"}
    env.pop("VAELAB_DEBUG", None)
    before = listing(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "vaelab", *train_argv(npz, f"{key}={bad}")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{key}=" in lines[0] and "must be" in lines[0]
    assert listing(tmp_path) == before


@pytest.mark.parametrize("sets,fragment", [
    (["objective.baseline=nvil"], "objective.baseline=nvil is a control variate"),
    (["model.latent=categorical", "model.prior=mixture"], "model.prior=mixture is a prior"),
    (["model.latent=categorical", "objective.temperature=0.4", "objective.temperature_rate=0.1"],
     "tau_min=0.5 exceeds"),
    (["model.latent=categorical", "objective.estimator=pathwise"], "needs a reparameterizable"),
    (["objective.name=iwae", "objective.free_bits=0.5"], "objective.free_bits applies"),
    (["train.inference=mean-field", "train.grad_variance_every=5"], "grad_variance_every"),
    (["model.encoder=conv", "model.channels=[]"], "model.channels=[]"),
    (["model.likelihood=gaussian", "model.likelihood_variance=shared",
      "model.likelihood_std=1e-6"], "scale floor"),
], ids=["baseline", "prior", "temperature", "estimator", "free-bits", "mode", "conv", "std"])
def test_fields_that_do_not_fit_together_are_refused_first(sets, fragment, npz, tmp_path,
                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(train_argv(npz, *sets))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and fragment in err, err
    assert listing(tmp_path) == []


def test_python_api_validates_before_loading_data(tmp_path):
    import vaelab

    config = Config()
    config.data.name = str(tmp_path / "missing.npz")  # never opened: validation fails first
    config.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"train.batch_size=0: must be an integer >= 1"):
        vaelab.fit(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_not_utf8_is_named(tmp_path, capsys, monkeypatch):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[data]\nname = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path} is not UTF-8"):
        load_config(path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(path)]) == 2
    assert f"config file {path} is not UTF-8" in capsys.readouterr().err


def test_choices_match_the_registries():
    """The Literal choices in config.py and the registries that build objects agree."""
    from vaelab.build import GAUSSIAN_PRIORS
    from vaelab.inference.baselines import BASELINES
    from vaelab.inference.estimators import ESTIMATORS
    from vaelab.inference.modes import MODES
    from vaelab.inference.objectives import OBJECTIVES
    from vaelab.models.latents import FAMILIES
    from vaelab.models.likelihoods import LIKELIHOODS, build_likelihood
    from vaelab.models.networks import ACTIVATIONS

    def names(alias):
        return set(typing.get_args(alias))

    assert names(cfgmod.LatentName) == set(FAMILIES)
    assert names(cfgmod.EstimatorName) == {"auto", *ESTIMATORS}
    assert names(cfgmod.BaselineName) == set(BASELINES)
    assert names(cfgmod.ObjectiveName) == set(OBJECTIVES)
    assert names(cfgmod.ActivationName) == set(ACTIVATIONS)
    assert names(cfgmod.PriorName) == {"auto", *GAUSSIAN_PRIORS, "uniform", "learned"}
    assert names(cfgmod.InferenceName) == set(MODES)
    for name in LIKELIHOODS:
        assert build_likelihood(name, (4,)).name == name
