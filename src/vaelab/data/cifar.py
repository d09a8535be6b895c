"""CIFAR-10 in its python-batch format: a verified download, or a directory of batch files.

The canonical ``cifar-10-python.tar.gz`` (Krizhevsky 2009, www.cs.toronto.edu/~kriz) holds
``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: pickles of dicts with
``data`` (uint8 (N, 3072), rows are R, G, B planes of 32x32) and ``labels`` (N ints).
Pickles can run code, so they are read with an unpickler that builds numpy arrays and
nothing else, and files of the built-in dataset are checked against the MD5s the dataset's
page publishes (also torchvision's) before they are unpickled.

Splits: train = the first 45,000 training images, valid = the last 5,000 (the last tenth
of data_batch_1..5 in file order, for directories of other sizes), train+valid = all
50,000, test = test_batch (10,000). Images are (N, 3, 32, 32) float32 k/255, ``is_8bit``.

``load_dataset("cifar10", split)`` looks in ``data_dir`` then the cache and verifies every
file; ``fetch_cifar10`` downloads the tarball (MD5-checked), extracts only the expected
members and verifies each. A path to a directory of batch files (``load_dataset(
"path/to/cifar-10-batches-py", split)``) loads the user's own data in this format,
unverified but still unpickled safely.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .cache import atomic_path, cache_dir
from .dataset import ArrayDataset, make_dataset
from .download import Opener, download
from .errors import DataError
from .hashing import bytes_digest, file_digest
from .mnist_pickle import _ALLOWED

NAMES = ("cifar10", "cifar-10")
FOLDER = "cifar-10-batches-py"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5")
TEST_BATCH = "test_batch"
BATCH_MD5 = {  # published with the dataset; tests swap entries (monkeypatch.setitem)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLITS = ("train", "valid", "train+valid", "test")
FETCH = "vaelab data fetch cifar10"


# numpy's array-rebuilding names, and codecs.encode (text -> bytes), which Python 3 uses
# to write bytes in protocol 2; nothing here can run code
_BATCH_ALLOWED = {**_ALLOWED, ("_codecs", "encode"): codecs.encode}


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, ints and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _BATCH_ALLOWED:
            return _BATCH_ALLOWED[(module, name)]
        raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only "
                        f"numpy arrays and lists; the file is not a CIFAR-10 batch")

    def persistent_load(self, pid: object) -> object:
        raise DataError("refusing a pickle with persistent ids: not a CIFAR-10 batch")


def _field(batch: dict, name: str, where: str) -> object:
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise DataError(f"{where} has no {name!r} entry; it is not a CIFAR-10 batch file")


def read_batch(path: Path, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 images (N, 3, 32, 32), uint8 labels (N,)).

    ``md5`` (the expected digest of the file) is checked before anything is unpickled.
    """
    raw = path.read_bytes()
    if md5 is not None and (got := bytes_digest(raw, "md5")) != md5:
        raise DataError(f"{path} failed its checksum (md5 {got}, expected {md5}); delete it "
                        f"and run `{FETCH}`")
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # a damaged stream can raise almost anything
        raise DataError(f"cannot unpickle {path} ({type(exc).__name__}); it is truncated or "
                        f"not a CIFAR-10 batch") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a dict; it is not a "
                        f"CIFAR-10 batch file")
    data, labels = _field(batch, "data", str(path)), _field(batch, "labels", str(path))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{path}: 'data' is {found}, expected uint8 (N, 3072); it is not a "
                        f"CIFAR-10 batch")
    y = np.asarray(labels)
    if y.shape != (data.shape[0],) or y.dtype.kind not in "iu" \
            or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers in 0..9; it is "
                        f"not a CIFAR-10 batch")
    return data.reshape(-1, 3, 32, 32), y.astype(np.uint8)


def _split_rows(n: int, split: str) -> slice:
    n_valid = n // 10  # 5000 of the 50000
    return {"train": slice(0, n - n_valid), "valid": slice(n - n_valid, n),
            "train+valid": slice(0, n)}[split]


def load_directory(directory: str | Path, split: str, *, verify: bool = False,
                   name: str | None = None) -> ArrayDataset:
    """Load one split from a directory of python-batch files (``verify``: check MD5s)."""
    directory = Path(directory).expanduser()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for CIFAR-10; use one of {', '.join(SPLITS)}")
    files = (TEST_BATCH,) if split == "test" else \
        tuple(f for f in TRAIN_BATCHES if (directory / f).is_file()) or TRAIN_BATCHES[:1]
    missing = [f for f in files if not (directory / f).is_file()]
    if verify:
        missing += [f for f in TRAIN_BATCHES if split != "test" and f not in files]
    if missing:
        raise DataError(f"{directory} lacks {', '.join(missing)} for split {split!r}; put the "
                        f"python-batch files there, or run `{FETCH}`")
    parts = [read_batch(directory / f, BATCH_MD5[f] if verify else None) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    if split != "test":
        rows = _split_rows(len(x), split)
        x, y = x[rows], y[rows]
    source = f"{directory} ({'verified CIFAR-10' if verify else 'python-batch files'})"
    return make_dataset(x, y, name=name or str(directory), split=split, source=source,
                        what=f"{directory} [{split}]")


def is_batch_directory(path: str | Path) -> bool:
    """A directory holding python-batch files (data_batch_1 or test_batch)?"""
    p = Path(path).expanduser()
    return p.is_dir() and any((p / f).is_file() for f in (TRAIN_BATCHES[0], TEST_BATCH))


def search_dirs(data_dir: str | Path | None) -> list[Path]:
    """Where the built-in CIFAR-10 is looked for, in order."""
    dirs = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        dirs += [base, base / FOLDER, base / "cifar10" / FOLDER]
    return [*dirs, cache_dir() / "cifar10" / FOLDER]


def find(data_dir: str | Path | None = None) -> Path | None:
    """The first directory holding all six batch files, or None (nothing verified yet)."""
    for d in search_dirs(data_dir):
        if all((d / f).is_file() for f in BATCH_MD5):
            return d
    return None


def load_cifar10(split: str, *, data_dir: str | Path | None = None, download: bool = False,
                 opener: Opener | None = None) -> ArrayDataset:
    """One split of the built-in CIFAR-10, every file MD5-verified; fetched if ``download``."""
    directory = find(data_dir)
    if directory is None and download:
        directory = fetch_cifar10(opener=opener)
    if directory is None:
        looked = ", ".join(str(d) for d in search_dirs(data_dir))
        raise DataError(f"dataset 'cifar10' not found; looked in {looked}; fetch it with "
                        f"`{FETCH}` or pass download=True")
    return load_directory(directory, split, verify=True, name="cifar10")


def _extract(tarball: Path, dest: Path) -> None:
    """Copy the six batch files (and batches.meta) out of the tarball, verifying each;
    members are read by their exact names, so nothing else in the archive is written."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name, md5 in BATCH_MD5.items():
                member = tar.extractfile(f"{FOLDER}/{name}")
                if member is None:
                    raise KeyError(name)
                data = member.read()
                if (got := bytes_digest(data, "md5")) != md5:
                    raise DataError(f"{tarball}: {name} has md5 {got}, expected {md5}; delete "
                                    f"the tarball and fetch again")
                with atomic_path(dest / name) as tmp:
                    tmp.write_bytes(data)
    except (KeyError, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{tarball} is not a complete CIFAR-10 archive ({type(exc).__name__}: "
                        f"{exc}); delete it and fetch again") from None


def fetch_cifar10(*, opener: Opener | None = None, progress: bool = True) -> Path:
    """Download the tarball into the cache (MD5-checked), extract and verify the batches;
    returns the directory holding them. Already-verified files are not fetched again."""
    root = cache_dir() / "cifar10"
    dest = root / FOLDER
    if all((dest / f).is_file() and file_digest(dest / f, "md5") == md5
           for f, md5 in BATCH_MD5.items()):
        return dest
    tarball = root / TARBALL
    if not (tarball.is_file() and file_digest(tarball, "md5") == TARBALL_MD5):
        download(URLS, tarball, md5=TARBALL_MD5, opener=opener, progress=progress)
    _extract(tarball, dest)
    tarball.unlink()  # 170 MB; the verified batches are what loading reads
    return dest
