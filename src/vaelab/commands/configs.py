"""``vaelab configs``: the example configs shipped with vaelab, one line each."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("configs", help="list the example configs shipped with vaelab "
                                       "(use one with: vaelab train -c NAME)")
    p.set_defaults(func=run)


def shipped_configs() -> list[tuple[str, Path]]:
    """(name, path) of every example config inside the package, seeds/ last."""
    from importlib.resources import files

    root = Path(str(files("vaelab") / "configs"))
    paths = sorted(root.glob("*.toml")) + sorted(root.glob("seeds/*.toml"))
    return [(p.relative_to(root).with_suffix("").as_posix(), p) for p in paths]


def summary_line(path: Path, width: int = 88) -> str:
    """What the file's leading comment says first: its title line when it has one (a line
    without a full stop, followed by a new sentence), else its first sentence; at most
    ``width`` characters."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.lstrip("#").strip():
            lines.append(line.lstrip("#").strip())
    if not lines:
        return ""
    if len(lines) > 1 and len(lines[0]) < 70 and lines[0][-1] not in ".,;:(" \
            and lines[1][:1].isupper():
        text = lines[0]  # a title line
    else:
        text = first_sentence(" ".join(lines))
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def first_sentence(text: str) -> str:
    """Up to the first full stop outside brackets and quotes that ends a sentence (not
    "et al." nor a number)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif ch == '"':
            quoted = not quoted
        elif ch == "." and not depth and not quoted and text[i + 1: i + 2] in ("", " "):
            word = text[:i].rsplit(" ", 1)[-1]
            if word not in ("al", "e.g", "i.e", "cf") and not word.isdigit():
                return text[: i + 1]
    return text


def run(args: argparse.Namespace) -> int:
    configs = shipped_configs()
    width = max(len(name) for name, _ in configs)
    for name, path in configs:
        print(f"{name:<{width}}  {summary_line(path)}")
    return 0
