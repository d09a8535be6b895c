"""Run folders: resolved config, metrics log, checkpoints (written atomically), summary.

Layout of a run folder::

    config.toml        the resolved config (every field, defaults included)
    meta.json          what the model needs to be rebuilt: data event shape, dataset, versions
    metrics.jsonl      one JSON object per epoch
    checkpoints/       step-<N>.pt (the newest train.keep_checkpoints), last.pt and best.pt
                       (hard links to step files): model, optimizer, schedule, RNG states,
                       position in the epoch, config fingerprint, world size
    summary.json       final numbers and how they were computed
    *.png              pictures
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import re
import secrets
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from vaelab.config import Config, ConfigError, apply_dict, config_from_dict, parse_override

CHECKPOINT_DIR = "checkpoints"


class RunError(ValueError):
    """A run folder that cannot be created, resumed or loaded; the message says why."""


def umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write via ``write(file)`` to a temporary file beside ``path``, fsync, then rename.

    A crash leaves either the old file or the new one, never a torn file. The file gets the
    mode a plain ``open`` would (0666 less the umask), not mkstemp's owner-only 0600, so a
    shared run folder can be read by whoever the user's umask lets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` name the same file as ``src``, atomically: a hard link under a temporary
    name renamed over ``dst``; where hard links are not supported, an atomic copy."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        data = src.read_bytes()
        atomic_write(dst, lambda f: f.write(data))
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(payload, handle))


CHECKPOINT_FIX = "copy an older checkpoints/step-*.pt over it, or start a new run"
# references a torch checkpoint's pickle makes to rebuild tensors (the weights-only loader
# admits these); anything else is an object vaelab does not load
_TORCH_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set")


def pickled_globals(data: bytes) -> list[str] | None:
    """The classes and functions a pickle refers to, read with ``pickletools`` (nothing is
    executed); None when the bytes are not a whole pickle."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(str(arg))
            elif op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]))
    except Exception:  # truncated or not a pickle at all
        return None
    return names


def _pickle_bytes(path: Path) -> bytes:
    """The pickle inside a checkpoint: data.pkl of torch's zip format, else the file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith("data.pkl"):
                    return archive.read(name)
        return b""
    return path.read_bytes()


def _refusal(path: Path) -> RunError:
    """Why torch's weights-only loader refused ``path``: foreign objects, or damage."""
    try:
        names = pickled_globals(_pickle_bytes(path))
    except (OSError, zipfile.BadZipFile, KeyError):
        names = None
    foreign = sorted({n for n in names or [] if not n.startswith(_TORCH_GLOBALS)})
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        return RunError(f"checkpoint {path} holds Python objects vaelab does not load "
                        f"({shown}): it is not a vaelab checkpoint, or it was altered; nothing "
                        f"in it was run. Use a checkpoint vaelab wrote: {CHECKPOINT_FIX}")
    return RunError(f"checkpoint {path} is corrupt or truncated (not a complete PyTorch "
                    f"checkpoint); {CHECKPOINT_FIX}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded without executing code (``weights_only=True``).

    Raises RunError naming the file when it is missing, empty, damaged, holds objects other
    than tensors and plain containers (a pickle with code is refused unread), or is not a
    dict; ``model_weights`` then checks the model's entry.
    """
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise RunError(f"checkpoint {path} is empty (0 bytes): a copy or write did not "
                       f"finish; {CHECKPOINT_FIX}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns on pickle protocols it does not use
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for torn or foreign files
        raise _refusal(path) from None
    if not isinstance(state, dict):
        raise RunError(f"checkpoint {path} is not a vaelab checkpoint: it holds an object of "
                       f"type {type(state).__name__}, not a dict with the model's weights "
                       f"under 'model'; {CHECKPOINT_FIX}")
    return state


def model_weights(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The model's state dict in checkpoint ``state`` (from ``path``), or RunError saying
    what the file holds instead."""
    what = f"checkpoint {path} is not a vaelab checkpoint"
    if "model" not in state:
        keys = ", ".join(repr(k) for k in list(state)[:4]) or "none"
        raise RunError(f"{what}: it has no 'model' entry (keys: {keys}); {CHECKPOINT_FIX}")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise RunError(f"{what}: its 'model' entry (of type {type(weights).__name__}) is not "
                       f"named tensors (a state dict); {CHECKPOINT_FIX}")
    return weights


# ---- checkpoints of a run: step files, last and best, and what a resume checks -------------

# Keys that change how a run executes, not what it computes, so they may differ on resume;
# train.epochs too: raising it in config.toml and resuming extends a finished run.
RUNTIME_KEYS = {"train": {"epochs", "progress", "threads", "time_limit_minutes", "device",
                          "checkpoint_every_steps", "keep_checkpoints", "fused", "matmul"},
                "data": {"storage"}}  # uint8, mapped or float32: the same float32 batches
UNCHECKED_SECTIONS = {"eval"}  # evaluation settings do not touch training


# what `--resume RUN --set KEY=VALUE` may change: how the run executes and how it is evaluated
RESUME_CHANGEABLE = {"train": RUNTIME_KEYS["train"], "data": RUNTIME_KEYS["data"],
                     "eval": None}  # None: every key


def resume_config(saved: Config, overrides: list[str], where: str | Path
                  ) -> tuple[Config, list[str]]:
    """The saved config of run ``where`` with ``overrides`` applied, and the keys they
    changed; RunError listing every other change (those would alter what was trained)."""
    config = config_from_dict(saved.to_dict())
    for text in overrides:
        apply_dict(config, parse_override(text), origin=f"--set {text}")
    before, after = saved.to_dict(), config.to_dict()
    changed = [f"{s}.{k}" for s in after for k in after[s] if after[s][k] != before[s][k]]
    refused = [key for key in changed if not _changeable(key)]
    if refused:
        detail = "; ".join(f"{k}: {_value(before, k)!r} -> {_value(after, k)!r}"
                           for k in refused)
        raise RunError(f"--resume {where}: only train.epochs, train.time_limit_minutes, other "
                       f"run-time train keys and eval.* may change; these differ from the "
                       f"run's config: {detail}; start a new run (or train.init_from={where})")
    if "train.epochs" in changed and config.train.lr_schedule == "cosine" \
            and after["train"]["epochs"] != before["train"]["epochs"]:
        raise RunError(f"--resume {where}: train.epochs cannot change for lr_schedule=cosine "
                       "(the schedule was laid over the original epochs); start a new run "
                       f"with train.init_from={where}")
    if config.train.epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {config.train.epochs}")
    return config, changed


def _changeable(key: str) -> bool:
    section, name = key.split(".", 1)
    if section not in RESUME_CHANGEABLE:
        return False
    allowed = RESUME_CHANGEABLE[section]
    return allowed is None or name in allowed


def _value(values: dict[str, Any], key: str) -> Any:
    section, name = key.split(".", 1)
    return values[section][name]


def config_fingerprint(config: Config) -> dict[str, Any]:
    """The config fields that determine the training computation, as nested plain dicts."""
    out = {}
    for section, values in config.to_dict().items():
        if section in UNCHECKED_SECTIONS:
            continue
        skip = RUNTIME_KEYS.get(section, set())
        out[section] = {k: v for k, v in values.items() if k not in skip}
    return out


def config_hash(config: Config) -> str:
    """SHA-256 (first 16 hex digits) of :func:`config_fingerprint`."""
    text = json.dumps(config_fingerprint(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields that differ, except those a later vaelab added: absent from the saved
    fingerprint and at their default now (the computation the older run did)."""
    defaults = Config().to_dict()
    diffs = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in a and key in b and b[key] == defaults.get(section, {}).get(key):
                continue  # a field added since the checkpoint was written, at its default
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                diffs.append(f"{section}.{key}: {a.get(key, '<absent>')!r} in the checkpoint, "
                             f"{b.get(key, '<absent>')!r} in the config")
    return diffs


def checkpoint_stamp(config: Config, world_size: int) -> dict[str, Any]:
    """What a resume checks a checkpoint against: the config's fingerprint and world size."""
    return {"config": config_fingerprint(config), "config_hash": config_hash(config),
            "world_size": world_size}


def check_resumable(state: dict[str, Any], path: Path, config: Config, world_size: int) -> None:
    """Raise RunError unless checkpoint ``state`` was written by this config and world size."""
    saved_hash = state.get("config_hash")
    if saved_hash is None:
        raise RunError(f"checkpoint {path} holds no config fingerprint, so it cannot be "
                       "resumed safely; start a new run")
    if saved_hash != config_hash(config):
        diffs = _config_differences(state.get("config", {}), config_fingerprint(config))
        if diffs or "config" not in state:  # else only fields added since, at their defaults
            detail = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more"
                                             if len(diffs) > 3 else "")
            raise RunError(f"checkpoint {path} was written for a different config "
                           f"({detail or 'fingerprint ' + saved_hash}); resume the run it "
                           "belongs to, or start a new run")
    saved_world = int(state.get("world_size", 1))
    if saved_world != world_size:
        raise RunError(f"checkpoint {path} was written by a {saved_world}-process run, but "
                       f"this run has {world_size} process(es); resume with the same number: "
                       f"vaelab train --nproc {saved_world} --resume RUN")


class Checkpoints:
    """The ``checkpoints/`` folder: ``step-<N>.pt`` files, ``last.pt`` and ``best.pt``.

    A save writes the step file atomically (temporary file, fsync, rename), then points
    ``last.pt`` (and ``best.pt``) at it with an atomic hard-link rename, then deletes step
    files beyond the newest ``keep``. A process killed at any moment leaves ``last.pt``
    naming a complete checkpoint, the previous or the new one.
    """

    STEP_FILE = re.compile(r"^step-(\d+)\.pt$")

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    last = property(lambda self: self.dir / "last.pt")
    best = property(lambda self: self.dir / "best.pt")

    def step_path(self, step: int) -> Path:
        return self.dir / f"step-{step:09d}.pt"

    def step_files(self) -> list[Path]:
        """Step checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir()
                 if (m := self.STEP_FILE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, payload: dict[str, Any], step: int, *, best: bool = False,
             keep: int = 3) -> Path:
        """Write the checkpoint of ``step``; point last (and best) at it; prune to ``keep``."""
        if keep <= 0:  # no step files: last.pt itself is written atomically
            save_checkpoint(self.last, payload)
            if best:
                atomic_link(self.last, self.best)
            return self.last
        path = self.step_path(step)
        save_checkpoint(path, payload)
        atomic_link(path, self.last)
        if best:
            atomic_link(path, self.best)
        for old in self.step_files()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def remove_partial(self) -> list[Path]:
        """Delete temporary files left by a write that was killed; returns them."""
        if not self.dir.is_dir():
            return []
        stale = [p for p in self.dir.iterdir() if p.name.startswith(".")
                 and p.name.endswith(".tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale


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
    checkpoints = property(lambda self: Checkpoints(self.path / CHECKPOINT_DIR))

    @property
    def replaced_path(self) -> Path:
        """Where ``--overwrite`` keeps the old run until the new one has a checkpoint."""
        return self.path.parent / f".{self.path.name}.replaced"

    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> RunDir:
        """Make a new, empty run folder; refuse an existing one unless ``overwrite``.

        ``overwrite`` moves the old folder aside (:attr:`replaced_path`) instead of mixing
        its files with the new run's (an old animation.gif, step-*.pt); it is deleted once
        the new run has its first checkpoint (:meth:`drop_replaced`) and put back if the new
        run fails before (:meth:`restore_replaced`), so a failed start loses nothing.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"output path {run.path} exists and is not a directory; "
                           "choose another --out")
        exists = run.path.is_dir() and any(run.path.iterdir())
        if exists and not overwrite:
            raise RunError(f"run folder {run.path} already exists; pass --resume {run.path} "
                           "to continue it, --overwrite to replace it, or another --out")
        if exists:
            if run.replaced_path.exists():
                raise RunError(f"an earlier --overwrite of {run.path} did not finish: the run "
                               f"it replaced is in {run.replaced_path}; move it back or "
                               "delete it, then try again")
            try:
                os.replace(run.path, run.replaced_path)
            except OSError as err:
                raise RunError(f"cannot move the old run {run.path} aside for --overwrite: "
                               f"{err.strerror}; delete it or choose another --out") from None
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise RunError(f"cannot write to output folder {run.path}: {err.strerror}; "
                           "choose a writable --out") from None
        return run

    def drop_replaced(self) -> None:
        """Delete the run that ``--overwrite`` replaced (the new one has a checkpoint now)."""
        if self.replaced_path.is_dir():
            shutil.rmtree(self.replaced_path, ignore_errors=True)

    def restore_replaced(self) -> bool:
        """Put back the run that ``--overwrite`` replaced, discarding the new one (which
        failed before its first checkpoint); True when there was one to put back."""
        if not self.replaced_path.is_dir() or self.last_checkpoint.is_file():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.replaced_path, self.path)
        return True

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

        raw = tomllib.loads(self.config_path.read_text())
        train = raw.get("train")
        if isinstance(train, dict) and "matmul" not in train:
            train["matmul"] = "onednn"  # runs from before train.matmul multiplied on oneDNN
        return config_from_dict(raw)

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.path / name
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return path

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            value = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise RunError(f"{path} not found; the run folder is incomplete (copy it whole, "
                           "or train it again)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunError(f"{path} is not valid JSON ({type(err).__name__}); the file was "
                           "edited or damaged") from None
        if not isinstance(value, dict):
            raise RunError(f"{path} holds a {type(value).__name__}, not a JSON object")
        return value

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch records; a torn last line (a crash mid-append) is ignored."""
        if not self.metrics_path.is_file():
            return []
        lines = [line for line in self.metrics_path.read_text().splitlines() if line]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise RunError(f"{self.metrics_path} line {i + 1} is not JSON; "
                                   "the file was edited or damaged") from None
        return records

    def truncate_metrics(self, epochs: int) -> None:
        """Drop records past ``epochs`` (written after the checkpoint a resume starts from)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
