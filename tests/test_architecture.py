"""The package's shape: layers import only downward, and no two modules import each other.

Imports are read from the source with ``ast`` (every ``import``, including those inside
functions, except those under ``if TYPE_CHECKING:``, which exist for annotations only), so
the test sees what a reader sees, not what one test run happened to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers first. A module may import modules of its own layer or of lower ones.
LAYERS: list[tuple[str, ...]] = [
    ("vaelab.config", "vaelab.console"),
    ("vaelab.data",),
    ("vaelab.rng", "vaelab.schedules", "vaelab.models"),
    ("vaelab.inference",),
    ("vaelab.build",),
    ("vaelab.training", "vaelab.evaluation"),
    ("vaelab.viz",),
    ("vaelab.summary",),
    ("vaelab.api",),
    ("vaelab.commands", "vaelab.cli", "vaelab.__main__"),
]


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    if module == "vaelab":  # the package's lazy top-level names (importlib, not imports)
        return len(LAYERS)
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it")


def module_files(src: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((src / "vaelab").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes of ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The vaelab modules ``module`` imports (``from pkg import name`` resolves to the
    submodule ``pkg.name`` where one exists, else to ``pkg``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deps = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                     for a in node.names]
        for name in names:
            while name and name not in modules:  # import a.b.c of a module a.b
                name = name.rpartition(".")[0]
            if name.startswith("vaelab") and name != module:
                deps.add(name)
    return deps


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = module_files(src)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
                  for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def toy_src(tmp_path):
    """A toy vaelab: models.vae imports data; data.prepare imports config."""
    _write(tmp_path, "vaelab/__init__.py")
    _write(tmp_path, "vaelab/config.py")
    _write(tmp_path, "vaelab/data/__init__.py", "from .prepare import load\n")
    _write(tmp_path, "vaelab/data/prepare.py", "from vaelab.config import Config\n")
    _write(tmp_path, "vaelab/models/__init__.py")
    _write(tmp_path, "vaelab/models/vae.py", "import torch\nfrom vaelab.data import load\n")
    return tmp_path


def test_the_checks_pass_a_clean_tree(toy_src):
    graph = import_graph(toy_src)
    assert graph["vaelab.models.vae"] == {"vaelab.data"}
    assert upward_imports(graph) == [] and cycles(graph) == []


def test_an_upward_import_is_caught_even_inside_a_function(toy_src):
    _write(toy_src, "vaelab/data/prepare.py",
           "def f():\n    from vaelab.models.vae import VAE\n")
    assert upward_imports(import_graph(toy_src)) == [
        "vaelab.data.prepare (layer 1) imports vaelab.models.vae (layer 2)"]


def test_an_annotation_only_import_is_not_an_edge(toy_src):
    _write(toy_src, "vaelab/data/prepare.py",
           "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
           "    from vaelab.models.vae import VAE\n")
    assert upward_imports(import_graph(toy_src)) == []


def test_a_cycle_is_caught(toy_src):
    _write(toy_src, "vaelab/models/priors.py", "from vaelab.models import vae\n")
    _write(toy_src, "vaelab/models/vae.py", "from vaelab.models.priors import x\n")
    assert cycles(import_graph(toy_src)) == [["vaelab.models.priors", "vaelab.models.vae"]]
