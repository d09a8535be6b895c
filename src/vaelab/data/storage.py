"""Which store holds the training rows (``data.storage``), whatever the data's source.

``training_rows(config, split, given)``: data passed from Python (``given.py``), ``.npy``
files (``npy.py``, memory-mapped), or any other dataset loaded into memory
(``prepare.load_split``), as a row store (``rows.py``). ``data.storage``:

* ``auto``: 8-bit data as uint8 (in memory, or mapped for ``.npy`` files and memmaps);
  other data as float32.
* ``memory``: in memory, 8-bit data as uint8 (a ``.npy`` source is read in).
* ``float32``: in memory as float32, as vaelab stored every dataset before (4x the memory
  of uint8 for 8-bit data; for comparisons).

A Dataset passed from Python is always read item by item. ``split_dataset`` is the same
choice for an evaluation split, held in memory (``ArrayDataset``).
"""

from __future__ import annotations

from typing import Any

from vaelab.config import Config, ConfigError

from .dataset import ArrayDataset
from .given import PYTHON, GivenData, given_dataset, given_rows
from .npy import is_npy_source, open_npy_rows
from .prepare import load_split
from .rows import ArrayRows, Rows, TensorRows


def _no_data(config: Config) -> ConfigError:
    return ConfigError(f"data.name={PYTHON} stands for data passed to vaelab.fit(config, "
                       "data=...); pass them again (fit(..., data=...), load_run(path, "
                       "data=...)), or set data.name to a dataset or file")


def training_rows(config: Config, split: str, given: GivenData | None = None) -> Rows:
    """The rows of ``split`` as training reads them (see the module docstring)."""
    data = config.data
    if given is not None:
        rows = given_rows(given, split, fractions=data.split_fractions, seed=data.split_seed,
                          sample_seed=config.train.seed)
        if data.storage == "float32" and isinstance(rows, TensorRows | ArrayRows):
            return TensorRows.of(rows.take(), float32=True)
        if data.storage == "memory" and isinstance(rows, ArrayRows):
            return rows.into_memory()
        return rows
    if data.name == PYTHON:
        raise _no_data(config)
    if is_npy_source(data.name):
        return open_npy_rows(data.name, split, fractions=data.split_fractions,
                             seed=data.split_seed, storage=data.storage)
    return TensorRows.of(load_split(config, split), float32=data.storage == "float32")


def split_dataset(config: Config, split: str, given: GivenData | None = None) -> ArrayDataset:
    """An evaluation split in memory, from the same source as the training rows."""
    if given is not None:
        return given_dataset(given, split, fractions=config.data.split_fractions,
                             seed=config.data.split_seed)
    if config.data.name == PYTHON:
        raise _no_data(config)
    return load_split(config, split)


def describe_storage(rows: Any) -> str:
    """One phrase for logs and meta.json: how the training rows are held."""
    return str(getattr(rows, "storage", "in memory"))
