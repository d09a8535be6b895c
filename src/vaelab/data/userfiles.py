"""Load the user's own data: a .npz file, or an IDX file given by path.

npz: a file with ``x_train``/``x_valid``/``x_test`` (optional ``y_train``/...) gives
splits "train"/"valid"/"test" from those arrays; "train+valid" joins the first two. A file
with one array ``x`` (and optional integer labels ``y``) and no ``x_*`` arrays is cut into
train/valid/test by the seeded split (``seeded``: ``data.split_fractions``,
``data.split_seed``); "all" is every row.

IDX: ``*-idx3-ubyte`` images (or ``*-idx2-ubyte`` vectors), optionally gzipped: one array,
cut by the seeded split as above. Labels are picked up from the standard sibling name when
it exists: ``train-images-idx3-ubyte.gz`` -> ``train-labels-idx1-ubyte[.gz]``.

Shapes: (N, D) vectors, (N, H, W) images (given one channel), (N, C, H, W) images.
uint8 is scaled by 1/255 and marked ``is_8bit``; other numbers are kept as they are,
so a float file is never 8-bit. Range is not checked here: see ``check_unit_interval``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from vaelab.config import DataConfig

from .dataset import ArrayDataset, make_dataset
from .errors import DataError
from .idx import read_idx
from .seeded import seeded_dataset

NPZ_SPLITS = ("all", "train", "valid", "train+valid", "test")


def _npz_array(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:  # object arrays need pickle, which is never allowed
        raise DataError(f"{path}: array {key!r} cannot be read without pickle ({exc}); save "
                        f"a numeric array, not dtype object") from None


def _npz_pair(npz: np.lib.npyio.NpzFile, suffix: str, path: Path,
              split: str) -> tuple[np.ndarray, np.ndarray | None]:
    xkey, ykey = f"x{suffix}", f"y{suffix}"
    if xkey not in npz.files:
        have = ", ".join(npz.files) or "none"
        if not any(k == "x" or k.startswith("x_") for k in npz.files):
            raise DataError(f"{path} has no array 'x' (arrays: {have}); save the data as x, "
                            f"e.g. numpy.savez(path, x=data, y=labels)")
        raise DataError(f"{path} has no array {xkey!r} for split {split!r} (arrays: {have}); "
                        f"save {xkey} or pick a split the file has")
    x = _npz_array(npz, xkey, path)
    y = _npz_array(npz, ykey, path) if ykey in npz.files else None
    return x, y


def _single_array(npz: np.lib.npyio.NpzFile) -> bool:
    """A file of one array ``x`` (no ``x_*`` splits of its own): the seeded split cuts it."""
    return "x" in npz.files and not any(k.startswith("x_") for k in npz.files)


def npz_splits(path: str | Path) -> list[str] | None:
    """The splits an .npz file holds itself (from its x_* arrays), or None for a file of one
    array ``x`` that the seeded split cuts (or an unreadable one: loading says why)."""
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as npz:
            if _single_array(npz):
                return None
            return [s for s in NPZ_SPLITS[1:] if s != "train+valid" and f"x_{s}" in npz.files]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, AttributeError):
        return None


def load_npz(path: str | Path, split: str = "all",
             options: DataConfig | None = None) -> ArrayDataset:
    """Load one split of a user .npz file (see the module docstring for the layout);
    ``options``: the seeded split's shares and seed (default: DataConfig's)."""
    path = Path(path).expanduser()
    if split not in NPZ_SPLITS:
        raise DataError(f"unknown split {split!r} for {path}; use one of {', '.join(NPZ_SPLITS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    what = f"{path} [{split}]"
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); save it with "
                        f"numpy.savez") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single .npy array, not an .npz archive; save it with "
                        f"numpy.savez(path, x=data)")
    with npz:
        if _single_array(npz):
            x, y = _npz_pair(npz, "", path, split)
            return seeded_dataset(x, y, split, options or DataConfig(), name=str(path),
                                  source=str(path), info={"dtype": x.dtype.name})
        if split == "train+valid":
            (xt, yt), (xv, yv) = (_npz_pair(npz, s, path, split) for s in ("_train", "_valid"))
            if (yt is None) != (yv is None):
                raise DataError(f"{path}: only one of y_train, y_valid is present; save "
                                f"labels for both splits or for neither")
            if xt.shape[1:] != xv.shape[1:]:
                raise DataError(f"{path}: x_train {xt.shape} and x_valid {xv.shape} differ "
                                f"in shape; save both with the same per-row shape")
            x = np.concatenate([xt, xv])
            y = None if yt is None or yv is None else np.concatenate([yt, yv])
        else:
            x, y = _npz_pair(npz, "" if split == "all" else f"_{split}", path, split)
    return make_dataset(x, y, name=str(path), split=split, source=str(path), what=what,
                        info={"dtype": x.dtype.name})


def labels_path(images: Path) -> Path | None:
    """The labels file next to an IDX images file, by the standard naming, if it exists."""
    stem = re.sub(r"\.gz$", "", images.name)
    name = re.sub(r"images([.-])idx\d-ubyte$", r"labels\1idx1-ubyte", stem)
    if name == stem:
        return None
    for candidate in (images.with_name(name + ".gz"), images.with_name(name)):
        if candidate.is_file():
            return candidate
    return None


def load_idx_file(path: str | Path, split: str = "all",
                  options: DataConfig | None = None) -> ArrayDataset:
    """Load one split of an IDX images (or vectors) file, with labels from its sibling if
    present, cut by the seeded split of ``options`` (split "all": every row)."""
    path = Path(path).expanduser()
    if split not in NPZ_SPLITS:
        raise DataError(f"unknown split {split!r} for {path}; use one of {', '.join(NPZ_SPLITS)}")
    x = read_idx(path)
    labels = labels_path(path)
    y = None
    if labels is not None:
        y = read_idx(labels)
        if y.ndim != 1:
            raise DataError(f"{labels} has shape {y.shape}; an IDX labels file must be 1-D")
    source = str(path) if labels is None else f"{path} with {labels.name}"
    return seeded_dataset(x, y, split, options or DataConfig(), name=str(path), source=source,
                          info={"dtype": x.dtype.name})
