"""Data passed from Python: ``vaelab.fit(config, data=...)`` and ``load_run(path, data=...)``.

``data`` is one of:

* one set: a numpy array or torch tensor x ((N, D), (N, H, W) or (N, C, H, W)), an
  ``(x, y)`` pair with integer labels y (N,), or a ``torch.utils.data.Dataset`` whose items
  are a tensor (or numpy array) or an (x, y) pair. It is split into train/valid/test by
  the seeded split of ``data.split_fractions`` and ``data.split_seed`` (``splits.py``):
  row numbers, no copy.
* named splits: ``{"train": ..., "valid": ..., "test": ...}``, each value any of the
  forms above; ``data.train_split`` etc. name the keys ("train+valid" joins two).

uint8 arrays are 8-bit data, kept as uint8 (k/255 when used); other numbers become float32.
A numpy memmap (``np.load(path, mmap_mode="r")``) is read by rows like a ``.npy`` file, a
Dataset item by item; arrays in memory are held as one tensor.

What a run keeps (``save_copy``): arrays in memory are saved in the run folder, in
``data/`` (as stored: uint8 stays uint8), so ``vaelab eval/plot/report/explore``,
``load_run`` and ``--resume`` work from the folder alone. A Dataset and a memmap are not
copied (they may be larger than the disk can hold twice): only the evaluation splits
(``data.valid_split``, ``data.test_split``) are saved, and resuming, or reading the training
split again, needs the data passed again (``fit(resume=RUN, data=...)``,
``load_run(RUN, data=...)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from .dataset import ArrayDataset, images_to_tensor, labels_to_tensor
from .errors import DataError
from .rows import ArrayRows, DatasetRows, Rows, TensorRows
from .seeded import split_record
from .splits import SPLIT_ORDER, split_rows

PYTHON = "python"  # data.name of a run trained on data passed to fit(data=...)
COPY_DIR = "data"  # the run folder's copy of such data


@dataclass(frozen=True)
class Part:
    """One set of rows passed from Python: values in memory (a tensor as stored, uint8 or
    float32), a numpy memmap, or a Dataset; with labels or not."""

    values: torch.Tensor | None = None
    mapped: np.ndarray | None = None
    dataset: Any = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        if self.values is not None:
            return int(self.values.shape[0])
        if self.mapped is not None:
            return int(self.mapped.shape[0])
        return len(self.dataset)

    @property
    def in_memory(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class GivenData:
    """``fit``'s data argument, checked: one set to split by seed, or named splits."""

    whole: Part | None
    splits: dict[str, Part]
    # evaluation splits once read (given_dataset): read and checked before training, then
    # reused for the run folder's copy and the end-of-run evaluation
    read: dict[tuple[Any, ...], ArrayDataset] = field(default_factory=dict, compare=False,
                                                      repr=False)

    def describe(self) -> str:
        """For meta.json and logs: what was passed."""
        parts = {"all": self.whole} if self.whole is not None else self.splits
        return "data passed to fit(): " + ", ".join(f"{k} {_describe(p)}"
                                                    for k, p in parts.items() if p is not None)


def _describe(part: Part) -> str:
    if part.values is not None:
        return f"{str(part.values.dtype).removeprefix('torch.')} {tuple(part.values.shape)}"
    if part.mapped is not None:
        return f"memmap {part.mapped.dtype} {part.mapped.shape}"
    return f"{type(part.dataset).__name__} ({len(part.dataset)} items)"


def _is_dataset(obj: Any) -> bool:
    return isinstance(obj, torch.utils.data.Dataset) or (
        hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
        and not isinstance(obj, np.ndarray | torch.Tensor | tuple | list | dict | str | bytes))


def as_part(obj: Any, what: str) -> Part:
    """One set of rows (see the module docstring), checked; DataError names ``what``."""
    labels = None
    if isinstance(obj, tuple | list) and len(obj) == 2 and not _is_dataset(obj[0]):
        obj, y = obj
        y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        labels = labels_to_tensor(y_np, _rows(obj, what), what)
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.memmap):
        if obj.dtype.kind not in "biuf" or obj.ndim not in (2, 3, 4) or 0 in obj.shape:
            images_to_tensor(obj[:1], what)  # raises the array's error
        return Part(mapped=obj, labels=labels)
    if isinstance(obj, np.ndarray):
        values, _ = images_to_tensor(obj, what)
        return Part(values=values, labels=labels)
    if _is_dataset(obj):
        if labels is not None:
            raise DataError(f"{what}: a Dataset carries its own labels (items (x, y)); pass "
                            f"the Dataset alone")
        DatasetRows(obj, name=PYTHON, split="all")  # checks len and item 0
        return Part(dataset=obj)
    raise DataError(f"{what} is a {type(obj).__name__}; pass a numpy array, a torch tensor, "
                    f"an (x, y) pair of them, a torch Dataset, or a dict of those by split")


def _rows(x: Any, what: str) -> int:
    if isinstance(x, np.ndarray | torch.Tensor) and x.ndim >= 1:
        return int(x.shape[0])
    raise DataError(f"{what}: (x, y) needs x to be an array or tensor, got {type(x).__name__}")


def as_given(data: Any) -> GivenData:
    """``fit(data=...)`` checked and normalised (before anything is written)."""
    if isinstance(data, GivenData):
        return data
    if isinstance(data, dict):
        bad = [k for k in data if k not in SPLIT_ORDER]
        if bad or not data:
            raise DataError(f"data= has keys {sorted(map(str, data))}; use a dict with keys "
                            f"{', '.join(SPLIT_ORDER)} (train needed), or pass one array to "
                            f"split by data.split_fractions")
        return GivenData(None, {k: as_part(v, f"data[{k!r}]") for k, v in data.items()})
    return GivenData(as_part(data, "data"), {})


def _part_rows(part: Part, *, split: str, rows: np.ndarray | None, seed: int) -> Rows:
    if part.values is not None:
        return TensorRows(part.values, part.labels, name=PYTHON, split=split,
                          source=f"data passed to fit(): {_describe(part)}",
                          is_8bit=part.values.dtype == torch.uint8, rows=rows)
    if part.mapped is not None:
        labels = None if part.labels is None else part.labels.numpy()
        return ArrayRows([part.mapped], labels, name=PYTHON, split=split,
                         source=f"data passed to fit(): {_describe(part)}", rows=rows)
    return DatasetRows(part.dataset, name=PYTHON, split=split, rows=rows, seed=seed)


def _join(a: Part, b: Part, what: str) -> Part:
    """Two splits as one ("train+valid"): arrays concatenated, Datasets chained."""
    if a.values is not None and b.values is not None:
        if a.values.shape[1:] != b.values.shape[1:] or a.values.dtype != b.values.dtype:
            raise DataError(f"{what}: train and valid differ in row shape or dtype; pass both "
                            "with the same")
        if (a.labels is None) != (b.labels is None):
            raise DataError(f"{what}: only one of train, valid has labels; give both or "
                            "neither")
        labels = None if a.labels is None or b.labels is None else torch.cat([a.labels,
                                                                               b.labels])
        return Part(values=torch.cat([a.values, b.values]), labels=labels)
    if a.dataset is not None and b.dataset is not None:
        return Part(dataset=torch.utils.data.ConcatDataset([a.dataset, b.dataset]))
    raise DataError(f"{what}: train+valid joins two arrays in memory or two Datasets; pass "
                    "train and valid of one kind, or set data.train_split=train")


def given_rows(given: GivenData, split: str, *, fractions: list[float], seed: int,
               sample_seed: int = 0) -> Rows:
    """The rows of ``split`` of data passed from Python (``seed``: data.split_seed;
    ``sample_seed``: of a Dataset's statistics sample)."""
    if given.whole is not None:
        part = given.whole
        rows = split_rows(len(part), split, fractions, seed)
        store = _part_rows(part, split=split, rows=None if rows.size == len(part) else rows,
                           seed=sample_seed)
        store.info = {"split": split_record(len(part), fractions, seed)}
        return store
    names = {"train+valid": ["train", "valid"], "all": list(given.splits)}.get(split, [split])
    missing = [s for s in names if s not in given.splits]
    if missing:
        raise DataError(f"data= has no {missing[0]!r} split (keys: {', '.join(given.splits)}); "
                        f"pass it, or set data.{_key(missing[0])}='' (or another split)")
    parts = [given.splits[s] for s in names]
    part = parts[0]
    for other in parts[1:]:
        part = _join(part, other, "data=")
    return _part_rows(part, split=split, rows=None, seed=sample_seed)


def _key(split: str) -> str:
    return {"train": "train_split", "valid": "valid_split", "test": "test_split"}.get(
        split, "train_split")


def save_copy(given: GivenData, folder: Path, eval_splits: list[str], *, fractions: list[float],
              seed: int) -> tuple[str, list[str]]:
    """Save what a run keeps of data passed from Python into ``folder`` (the run's
    ``data/``; see the module docstring). Returns (the path to give ``data.name``, relative
    to the run folder, and the splits it holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    if given.whole is not None and given.whole.in_memory:
        _save(folder / "x.npy", given.whole)
        return f"{COPY_DIR}/x.npy", ["train", "valid", "test", "train+valid", "all"]
    kept: list[str] = []
    for split in dict.fromkeys([*given.splits, *eval_splits]):
        if given.whole is None and split in given.splits and given.splits[split].in_memory:
            _save(folder / f"{split}.npy", given.splits[split])
            kept.append(split)
        elif split in eval_splits and split in SPLIT_ORDER:  # a Dataset or memmap: read it
            data = given_dataset(given, split, fractions=fractions, seed=seed)
            _save(folder / f"{split}.npy", Part(values=data.values, labels=data.y))
            kept.append(split)
    if {"train", "valid"} <= set(kept):
        kept.append("train+valid")
    return COPY_DIR, kept


def _save(path: Path, part: Part) -> None:
    """``np.save`` via a temporary file and a rename, so a crash leaves no torn copy."""
    assert part.values is not None
    for target, array in ((path, part.values.numpy()),
                          (path.with_name(path.name[:-4] + ".labels.npy"),
                           None if part.labels is None else part.labels.numpy())):
        if array is None:
            continue
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)


def given_dataset(given: GivenData, split: str, *, fractions: list[float],
                  seed: int) -> ArrayDataset:
    """One split of data passed from Python, in memory (evaluation; read once)."""
    key = (split, tuple(fractions), seed)
    if key not in given.read:
        given.read[key] = given_rows(given, split, fractions=fractions, seed=seed).take()
    return given.read[key]
