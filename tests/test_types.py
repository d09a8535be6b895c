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


def _unannotated(path: Path) -> list[str]:
    """Public functions and methods of one module missing a parameter or return hint."""
    import ast

    tree = ast.parse(path.read_text())
    functions = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.append(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            functions += [f for f in node.body if isinstance(f, ast.FunctionDef)]
    found = []
    for f in functions:
        if f.name.startswith("_") and f.name != "__init__":
            continue
        params = [a for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs
                  if a.arg not in ("self", "cls")]
        missing = [a.arg for a in params if a.annotation is None]
        if f.returns is None and f.name != "__init__":
            missing.append("return")
        if missing:
            found.append(f"{path.relative_to(ROOT)}:{f.lineno} {f.name}: {', '.join(missing)}")
    return found


def test_public_functions_have_complete_type_hints():
    """mypy checks the hints that exist; this checks that every public function has them
    (parameters and return), so users' type checkers and IDEs see the whole API."""
    missing = [line for path in sorted((ROOT / "src" / "vaelab").rglob("*.py"))
               for line in _unannotated(path)]
    assert not missing, "public functions without full type hints:\n" + "\n".join(missing)
