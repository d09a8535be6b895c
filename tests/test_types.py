"""Static types: mypy (configured in pyproject.toml's [tool.mypy]) passes on src/vaelab,
and the package ships its PEP 561 ``py.typed`` marker, so users' type checkers read our hints.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[test]' installs it)")
def test_mypy_passes_on_the_package():
    # cwd=ROOT: the config's `files` are relative to the repo root; the cache stays there
    # (.mypy_cache/, git-ignored), so a second run takes a second or two
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout}{proc.stderr}"


def test_py_typed_marker_ships():
    assert (ROOT / "src" / "vaelab" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["vaelab"]
