"""A model's weights as ``model.safetensors``: one file, no pickle, loadable by anyone.

Checkpoints (``checkpoints/*.pt``) carry the optimizer, RNG states and position needed to
resume and are read with ``torch.load(weights_only=True)``; the weights a colleague or the
Hugging Face Hub needs are just tensors, so they go through the ``safetensors`` format
(a JSON header and raw little-endian buffers: nothing to execute when loading it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import torch
from torch import nn

from vaelab.training.runs import RunError, fsync_dir, umask

WEIGHTS_FILE = "model.safetensors"
# an exported model folder (vaelab export): what load_run needs, and the model card
EXPORT_FILES = ("config.toml", "meta.json", WEIGHTS_FILE, "README.md", "samples.png")


def versions() -> dict[str, str]:
    """vaelab's and torch's versions, as recorded in meta.json."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("vaelab")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        ours = "unknown (not installed)"
    return {"vaelab": ours, "torch": torch.__version__}


def save_safetensors(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors; tied tensors stored once),
    atomically: a temporary file beside it, fsync, rename."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        save_model(model, str(tmp), metadata={"format": "pt", **(metadata or {})})
        os.chmod(tmp, 0o666 & ~umask())
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def load_safetensors(model: nn.Module, path: Path) -> None:
    """Load ``path`` (written by :func:`save_safetensors`) into ``model``, strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), strict=True)
    except (RuntimeError, SafetensorError, OSError) as err:
        raise RunError(f"{path} does not fit the run's config or is damaged: "
                       f"{str(err).splitlines()[0]}") from None
