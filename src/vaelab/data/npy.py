"""``.npy`` data by path: memory-mapped, one file or a folder of shards, split by seed or by name.

Layouts (``data.name``):

* ``faces.npy``: one array (N, D), (N, H, W) or (N, C, H, W); labels, when wanted, in
  ``faces.labels.npy`` beside it (integers, shape (N,)). Split into train/valid/test by
  the seeded split of ``data.split_fractions`` / ``data.split_seed`` (``splits.py``).
* a folder of shards, ``part-000.npy``, ``part-001.npy``, ...: their rows concatenated in
  sorted file-name order, as if one array; labels in each shard's ``.labels.npy`` sibling
  (for every shard or none). Split by seed like one file.
* a folder with a file or a folder of shards per split: ``train.npy`` (or ``train/``),
  ``valid.npy``, ``test.npy``: those are the splits ("train+valid" joins two, "all" every
  one there). A run trained on data passed to ``fit`` keeps its copy in this form.

Files are opened with ``np.load(mmap_mode="r", allow_pickle=False)``: nothing is read until
a batch asks for its rows (``rows.ArrayRows``), and a split is a list of row numbers, not a
copy. ``data.storage=memory`` reads the training split into memory instead (uint8 stays
uint8), ``float32`` as float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .rows import ArrayRows, Rows
from .seeded import split_record
from .splits import split_rows

LABELS = ".labels.npy"  # suffix of a labels file: faces.npy -> faces.labels.npy
SPLIT_NAMES = ("train", "valid", "test")


def is_npy_source(name: str) -> bool:
    """A ``.npy`` path, or a folder holding ``.npy`` files (or split folders of them)."""
    if name.lower().endswith(".npy"):
        return True
    path = Path(name).expanduser()
    if not path.is_dir():
        return False
    return bool(_data_files(path)) or any(_data_files(path / s) for s in SPLIT_NAMES
                                          if (path / s).is_dir())


def _data_files(folder: Path) -> list[Path]:
    """The data (not label) ``.npy`` files of a folder, in sorted name order."""
    return sorted(p for p in folder.glob("*.npy") if not p.name.endswith(LABELS)
                  and p.is_file())


def labels_file(path: Path) -> Path:
    """Where the labels of data file ``path`` live: ``x.npy`` -> ``x.labels.npy``."""
    return path.with_name(path.name[:-len(".npy")] + LABELS)


def split_layout(path: Path) -> dict[str, list[Path]] | None:
    """The files of each named split of a folder (train.npy or train/ ...), or None when
    the folder (or file) is one dataset to split by seed."""
    if not path.is_dir():
        return None
    files = _data_files(path)
    named = {p.name[:-len(".npy")] for p in files}
    splits, others = named & set(SPLIT_NAMES), sorted(named - set(SPLIT_NAMES))
    folders = {s for s in SPLIT_NAMES if (path / s).is_dir() and _data_files(path / s)}
    if not (folders or splits):
        return None  # shards
    if others:
        raise DataError(f"{path} mixes split files or folders "
                        f"({', '.join(sorted(splits | folders))}) with other .npy files "
                        f"({', '.join(others)}); keep one layout: shards, or train/valid/test")
    layout: dict[str, list[Path]] = {}
    for s in SPLIT_NAMES:
        if s in folders and s in named:
            raise DataError(f"{path} has both {s}.npy and {s}/; keep one of them")
        if s in folders:
            layout[s] = _data_files(path / s)
        elif s in named:
            layout[s] = [path / f"{s}.npy"]
    return layout


def map_file(path: Path) -> np.ndarray:
    """One ``.npy`` file, memory-mapped read-only (never unpickled)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DataError(f"{path} is not a .npy file (no NUMPY header); save it with "
                            f"numpy.save")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Python objects" in str(exc):
            raise DataError(f"{path} cannot be read without pickle ({exc}); save a numeric "
                            f"array with numpy.save") from None
        raise DataError(f"{path} is not a readable .npy file ({exc}); save it again with "
                        f"numpy.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({exc}); save it with "
                        f"numpy.save") from None


def read_labels(files: list[Path]) -> np.ndarray | None:
    """The labels of data files (their ``.labels.npy`` siblings), concatenated, or None
    when there are none; a labels file for some shards only is refused."""
    found = [labels_file(f) for f in files if labels_file(f).is_file()]
    if not found:
        return None
    if len(found) != len(files):
        missing = next(f for f in files if not labels_file(f).is_file())
        raise DataError(f"{labels_file(missing)} is missing, but other files have labels; "
                        f"save labels for every file or for none")
    parts = []
    for path in found:
        y = np.load(path, allow_pickle=False)
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise DataError(f"{path} holds {y.dtype} {y.shape}; labels must be integers, "
                            f"one per row, shape (N,)")
        parts.append(y.astype(np.int64))
    return np.concatenate(parts)


def open_npy(name: str, split: str, *, fractions: list[float], seed: int) -> ArrayRows:
    """The rows of ``split`` of a ``.npy`` source (see the module docstring), mapped."""
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check data.name")
    layout = split_layout(path)
    rows = None
    if layout is None:
        files = [path] if path.is_file() else _data_files(path)
        if not files:
            raise DataError(f"{path} holds no .npy files; save the data with numpy.save")
    else:
        wanted = {"all": list(layout), "train+valid": ["train", "valid"]}.get(split, [split])
        missing = [s for s in wanted if s not in layout]
        if missing or split not in (*SPLIT_NAMES, "all", "train+valid"):
            add = missing[0] if missing else split
            raise DataError(f"{path} has no {split!r} split (it holds "
                            f"{', '.join(layout) or 'none'}); add {add}.npy, or pick a split "
                            f"it has (data.train_split, valid_split, test_split)")
        files = [f for s in wanted for f in layout[s]]
    arrays = [map_file(f) for f in files]
    labels = read_labels(files)
    what = [str(f) for f in files]
    store = ArrayRows(arrays, labels, name=str(path), split=split, source=_source(path, files),
                      files=what)
    if layout is None:
        if labels is not None and labels.shape[0] != store.n:
            raise DataError(f"{path}: {labels.shape[0]} labels for {store.n} rows")
        rows = split_rows(store.n, split, fractions, seed)
        if rows.size != store.n:
            store = ArrayRows(arrays, labels, name=str(path), split=split,
                              source=store.source, rows=rows, files=what)
        store.info = {"split": split_record(int(store.offsets[-1]), fractions, seed)}
    return store


def _source(path: Path, files: list[Path]) -> str:
    if len(files) == 1:
        return f"{files[0]} (memory-mapped)"
    return f"{path} ({len(files)} memory-mapped .npy files)"


def open_npy_rows(name: str, split: str, *, fractions: list[float], seed: int,
                  storage: str) -> Rows:
    """The training rows of a ``.npy`` source under ``data.storage``: mapped (auto), or
    read into memory (memory: as stored; float32: converted)."""
    store = open_npy(name, split, fractions=fractions, seed=seed)
    if storage == "auto":
        return store
    return store.into_memory(float32=storage == "float32")
