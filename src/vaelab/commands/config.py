"""``vaelab config show`` and ``vaelab config keys``: the resolved config with each field's
meaning, and every key with its type and default.

The meaning of a field is the comment beside it in ``vaelab/config.py`` (the one place it
is written), read from the source with ``tokenize`` so the two can never disagree.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from dataclasses import dataclass


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the resolved config, or list every key",
                       description="show: the config a run would use (defaults, then -c FILE, "
                                   "then --set), as TOML with each field's meaning; keys: "
                                   "every key with its type, default and meaning.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="the resolved config as TOML, each field commented")
    show.add_argument("--config", "-c", help="TOML config file or a shipped example's name")
    show.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override a config key")
    show.set_defaults(func=run_show)
    keys = csub.add_parser("keys", help="every key: type, default and meaning")
    keys.set_defaults(func=run_keys)


@dataclass
class FieldDoc:
    key: str  # section.name
    type: str
    default: typing.Any
    meaning: str


def field_docs() -> list[FieldDoc]:
    """Every config key in declaration order, with the comment written beside it."""
    from vaelab import config as config_module

    source = inspect.getsource(config_module)
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                              tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    classes = {node.name: node for node in ast.parse(source).body
               if isinstance(node, ast.ClassDef)}
    defaults = config_module.Config()
    docs = []
    for section in dataclasses.fields(defaults):
        obj = getattr(defaults, section.name)
        node = classes[type(obj).__name__]
        hints = typing.get_type_hints(type(obj))
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            end = stmt.end_lineno or stmt.lineno
            text = [comments.get(n, "") for n in range(stmt.lineno, end + 1)]
            line = end + 1  # a comment continued on the lines below
            while line in comments and line not in code_lines:
                text.append(comments[line])
                line += 1
            if not any(text):  # a comment written on the lines above the field
                above: list[str] = []
                line = stmt.lineno - 1
                while line in comments and line not in code_lines:
                    above.insert(0, comments[line])
                    line -= 1
                text = above
            docs.append(FieldDoc(f"{section.name}.{name}", _type_name(hints[name]),
                                 getattr(obj, name), " ".join(t for t in text if t)))
    return docs


def _type_name(hint: typing.Any) -> str:
    if typing.get_origin(hint) in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(hint))
        return f"{typing.get_origin(hint).__name__}[{args}]"
    return getattr(hint, "__name__", str(hint))


def _toml_value(value: typing.Any) -> str:
    """One TOML literal on one line (tomli_w breaks arrays over lines)."""
    import tomli_w

    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def run_show(args: argparse.Namespace) -> int:
    from vaelab.config import load_config

    config = load_config(args.config, args.overrides).to_dict()
    meaning = {d.key: d.meaning for d in field_docs()}
    lines = [f"# resolved config: defaults, then {args.config or 'no file'}"
             + (", then " + " ".join(f"--set {o}" for o in args.overrides)
                if args.overrides else "")]
    for section, values in config.items():
        lines.append(f"\n[{section}]")
        width = max((len(f"{k} = {_toml_value(v)}") for k, v in values.items()), default=0)
        for key, value in values.items():
            assignment = f"{key} = {_toml_value(value)}"
            note = meaning.get(f"{section}.{key}", "")
            lines.append(f"{assignment:<{width}}  # {note}" if note else assignment)
    print("\n".join(lines))
    return 0


def run_keys(args: argparse.Namespace) -> int:
    docs = field_docs()
    key_w = max(len(d.key) for d in docs)
    type_w = max(len(d.type) for d in docs)
    default_w = min(24, max(len(_toml_value(d.default)) for d in docs))
    print(f"{'key':<{key_w}}  {'type':<{type_w}}  {'default':<{default_w}}  meaning")
    for d in docs:
        print(f"{d.key:<{key_w}}  {d.type:<{type_w}}  {_toml_value(d.default):<{default_w}}  "
              f"{d.meaning}")
    return 0
