"""Run folders: resolved config, metrics log, checkpoints (written atomically), summary.

Layout of a run folder::

    config.toml        the resolved config (every field, defaults included)
    meta.json          what the model needs to be rebuilt: data event shape, dataset, versions
    metrics.jsonl      one JSON object per epoch
    checkpoints/       last.pt and best.pt (model, optimizer, schedule, RNG states)
    summary.json       final numbers and how they were computed
    *.png              pictures
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from vaelab.config import Config, config_from_dict

CHECKPOINT_DIR = "checkpoints"


class RunError(ValueError):
    """A run folder that cannot be created, resumed or loaded; the message says why."""


def atomic_write(path: Path, write) -> None:
    """Write via ``write(file)`` to a temporary file beside ``path``, fsync, then rename.

    A crash leaves either the old file or the new one, never a torn file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without executing code (``weights_only=True``)."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn or foreign files
        raise RunError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                       "delete it and resume from another checkpoint") from None


class RunDir:
    """A run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.toml")
    meta_path = property(lambda self: self.path / "meta.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    last_checkpoint = property(lambda self: self.path / CHECKPOINT_DIR / "last.pt")
    best_checkpoint = property(lambda self: self.path / CHECKPOINT_DIR / "best.pt")

    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> RunDir:
        """Make a new run folder; refuse an existing one unless ``overwrite``."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"output path {run.path} exists and is not a directory; "
                           "choose another --out")
        if run.path.is_dir() and any(run.path.iterdir()) and not overwrite:
            raise RunError(f"run folder {run.path} already exists; pass --resume {run.path} "
                           "to continue it, --overwrite to replace it, or another --out")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise RunError(f"cannot write to output folder {run.path}: {err.strerror}; "
                           "choose a writable --out") from None
        if overwrite:
            for name in ("metrics.jsonl", "summary.json"):
                (run.path / name).unlink(missing_ok=True)
        return run

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.config_path.is_file():
            raise RunError(f"{run.path} is not a vaelab run folder (no config.toml); "
                           "pass the folder that `vaelab train` wrote")
        return run

    def write_config(self, config: Config) -> None:
        import tomli_w

        atomic_write_text(self.config_path, tomli_w.dumps(config.to_dict()))

    def read_config(self) -> Config:
        import tomllib

        return config_from_dict(tomllib.loads(self.config_path.read_text()))

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.path / name
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return path

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def truncate_metrics(self, epochs: int) -> None:
        """Drop records past ``epochs`` (written after the checkpoint a resume starts from)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
