"""The public API the README documents: every name resolves, the CLI keeps its commands."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vaelab

README = Path(__file__).resolve().parents[1] / "README.md"
TOP_LEVEL = ["fit", "load_run", "Run", "Config", "load_config", "VAE"]
COMMANDS = ["train", "eval", "data", "plot", "report", "explore", "estimators", "gap"]
RUN_METHODS = ["data", "evaluate", "binarization_note"]
MODEL_METHODS = ["encode", "decode", "sample", "reconstruct", "prior", "log_joint"]


def resolve(dotted: str):
    """``vaelab.a.b.name`` -> the object: the longest importable module prefix, then
    attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def readme_names() -> list[str]:
    """Every ``vaelab.x.y`` name written in the README's text (not commands or paths)."""
    text = README.read_text()
    names = set(re.findall(r"(?<![\w/-])vaelab(?:\.[A-Za-z_]\w*)+", text))
    return sorted(n for n in names if not n.endswith((".toml", ".py", ".html", ".json")))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_names(name):
    assert getattr(vaelab, name) is not None
    assert name in vaelab.__all__


def test_readme_names_exist():
    names = readme_names()
    assert "vaelab.build.build_model" in names  # the scan finds the documented names
    for name in names:
        resolve(name)


def test_run_and_model_methods():
    for method in RUN_METHODS:
        assert callable(getattr(vaelab.Run, method))
    for method in MODEL_METHODS:
        assert callable(getattr(vaelab.VAE, method))


def test_cli_commands():
    out = subprocess.run([sys.executable, "-m", "vaelab", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in COMMANDS:
        assert re.search(rf"\b{command}\b", out), command
