"""Read and write IDX files (LeCun's MNIST format), plain or gzipped.

An IDX file is a 4-byte magic (0, 0, type code, rank), ``rank`` big-endian uint32
dimensions, then the values in C order, big-endian. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

IDX_NAME = re.compile(r"idx\d-ubyte(\.gz)?$")  # names such as train-images-idx3-ubyte.gz

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}


def read_payload(path: Path) -> bytes:
    """The file's IDX bytes, decompressed if it is gzipped (sniffed, not guessed by name)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is a truncated or damaged gzip file ({exc}); delete it and "
                        f"fetch it again") from None


def parse_idx(data: bytes, what: str) -> np.ndarray:
    """Decode IDX bytes into a native-endian numpy array (a fresh, writable copy)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DataError(f"{what} is not an IDX file (bad magic bytes {data[:4].hex()}); "
                        f"pass an IDX file such as train-images-idx3-ubyte")
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{what} is truncated inside its IDX header; fetch it again")
    shape = struct.unpack(f">{rank}I", data[4:header])
    dtype = np.dtype(_TYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{what} holds {len(data)} bytes but its IDX header {shape} needs "
                        f"{expected}: the file is truncated or damaged; fetch it again")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    return parse_idx(read_payload(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a numeric array of a type IDX supports (uint8, int8/16/32, float32/64)."""
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}; convert to uint8, int8, "
                        f"int16, int32, float32 or float64")
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + np.ascontiguousarray(array, dtype=np.dtype(_TYPES[code])).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as IDX; gzipped when the name ends in .gz."""
    path = Path(path)
    data = encode_idx(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
