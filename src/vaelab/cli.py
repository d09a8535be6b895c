"""``vaelab`` command line: each subcommand lives in ``vaelab/commands/<name>.py`` and
exposes ``register(subparsers)``; this file only dispatches and turns user errors into one
clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["train", "eval", "data", "plot", "report", "explore", "gap", "estimators", "export",
            "configs", "config"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaelab", description="Variational autoencoders: train, evaluate, look inside.")
    parser.add_argument("--version", action="version", version=version_line())
    add_verbosity(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vaelab.commands.{name}").register(sub)
    for command in sub.choices.values():  # `vaelab -q train` and `vaelab train -q` alike
        add_verbosity(command, argparse.SUPPRESS)
    return parser


def version_line() -> str:
    """``vaelab X (torch Y, Python Z)``: what a bug report needs first."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"vaelab {of('vaelab')} (torch {of('torch')}, Python {platform.python_version()})"


def add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", "-q", action="store_true", default=default,
                       help="only warnings and errors: no progress bars, no epoch lines")
    group.add_argument("--verbose", "-v", action="store_true", default=default,
                       help="also debug lines (the explorer: every request)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vaelab import console
    from vaelab.training.heap import keep_freed_memory

    keep_freed_memory()  # every command: training and evaluation re-allocate big buffers
    console.configure(int(getattr(args, "verbose", False)) - int(getattr(args, "quiet", False)))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vaelab: interrupted; the last completed checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vaelab config keys | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return 0
    except (ValueError, OSError, RuntimeError) as err:
        if os.environ.get("VAELAB_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"vaelab {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        console.unconfigure()


if __name__ == "__main__":
    sys.exit(main())
