"""Training rows read by row numbers: in memory, memory-mapped ``.npy`` files, a torch Dataset.

The trainer draws one permutation of the row numbers 0..n-1 per epoch and, under data
parallelism, cuts each global batch's row numbers to the rank's slice *before* anything is
read (training/trainer.py), so every process reads only its own rows. A store turns row
numbers into a float32 batch on the device, in the order asked (``gather``):

* :class:`TensorRows`: a tensor in memory, moved to the device once: uint8 for 8-bit data
  (a quarter of float32's memory; each batch is converted to k/255 on the device), or
  float32 (``data.storage=float32``, vaelab's storage before issue 15).
* :class:`ArrayRows`: numpy arrays, typically memory-mapped ``.npy`` files
  (``np.load(mmap_mode="r")``): one array or several shards whose rows follow each other.
  A batch's rows are read in sorted order (forwards through the files) and put back in
  permutation order. Every :data:`RELEASE_BYTES` of file mapped in by reads (each random row
  may map up to :data:`FAULT_AROUND` around it), the mapped pages are dropped from the
  process (``madvise(MADV_DONTNEED)``; the kernel's page cache keeps them, so nothing is
  read from disk again), so resident memory does not grow with the dataset.
* :class:`DatasetRows`: a ``torch.utils.data.Dataset`` read item by item (sorted), each
  item checked (a tensor or array of numbers, of item 0's shape and dtype) as it is read.

A store may cover a subset of another's rows (a split: sorted row numbers, no copy).
``statistics`` makes the mean and value range in chunks (data-dependent initialisation and
range checks; a Dataset larger than :data:`SAMPLE_ROWS` is summarised on a seeded sample),
and ``take`` copies a few rows into an in-memory :class:`ArrayDataset` (evaluation splits).
Nothing here makes a float32 copy of a whole store.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaelab.config import ConfigError

from .dataset import ArrayDataset, to_unit
from .errors import DataError
from .hashing import uniforms_at

CHUNK_BYTES = 16 * 2**20  # rows read at once by ``statistics``/``take`` (as float32)
RELEASE_BYTES = 64 * 2**20  # a memory-mapped store drops its pages after mapping this much
# A page fault on a file mapping maps the cached pages around it too: 64 KB by Linux's
# fault-around, up to a whole 2 MB folio where the page cache holds large folios (measured:
# ~370 KB mapped per random 784-byte row, Linux 6.18, tmpfs). Counted at its largest.
FAULT_AROUND = 2 * 2**20
SAMPLE_ROWS = 10_000  # a Dataset's statistics: this many seeded rows (all when fewer)


@dataclass(frozen=True)
class RowStats:
    """What the data-dependent initialisation and the range checks need of a store."""

    mean: torch.Tensor  # float32 (*event_shape): the mean row
    lo: float  # smallest value (as float32, in [0, 1] for 8-bit data)
    hi: float  # largest value
    rows: int  # rows summarised (all of them, or a Dataset's sample)


class Rows:
    """Rows of one split, read by row numbers (the base of every store).

    Attributes: ``event_shape`` (one row, e.g. (1, 28, 28) or (D,)); ``is_8bit`` (uint8
    values, k/255 as float); ``y`` (int64 (n,) labels in memory, or None); ``name``,
    ``split``, ``source`` (for logs and the run's meta.json); ``storage`` (how the rows
    are held, for logs); ``device`` (where ``gather`` puts a batch). ``rows_read`` counts
    the rows read so far; set ``read_log`` to a list to record every read's row numbers
    (sorted, numbered in the underlying arrays), e.g. to check what a rank touches.
    """

    event_shape: tuple[int, ...]
    is_8bit: bool
    y: torch.Tensor | None
    name: str
    split: str
    source: str
    storage: str

    def __init__(self, n_base: int, rows: np.ndarray | None) -> None:
        # rows: sorted row numbers of the underlying arrays this store covers (None = all)
        self._rows = rows
        self.n = n_base if rows is None else int(rows.shape[0])
        self.device = torch.device("cpu")
        self.rows_read = 0
        self.read_log: list[np.ndarray] | None = None
        self._stats: RowStats | None = None
        self.info: dict[str, Any] = {}  # what a run records (ArrayDataset.info: the split, ...)

    # -- the interface the trainer uses --------------------------------------------------
    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, ...]:
        """(n, *event_shape), as a tensor's shape (build's vamp-prior init reads it)."""
        return (self.n, *self.event_shape)

    @property
    def index_device(self) -> torch.device:
        """Where the trainer's row numbers should live (the device of an in-memory tensor)."""
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Rows:
        """Put future batches on ``device``; returns self."""
        self.device = torch.device(device)
        return self

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 (len(idx), *event_shape) on ``device``: the rows ``idx`` (int64, any
        order, numbered 0..n-1 in this store), in that order; read in sorted order."""
        wanted = idx.cpu().numpy()
        order = np.argsort(wanted, kind="stable")
        local = wanted[order]
        block = self._read(self._base(local))  # stored dtype, CPU, sorted order
        inverse = torch.empty(len(order), dtype=torch.int64)
        inverse[torch.from_numpy(order)] = torch.arange(len(order))
        return self._convert(block.index_select(0, inverse).to(self.device))

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        """``gather(idx)``: a store indexes like a float32 tensor of its rows."""
        return self.gather(torch.as_tensor(idx, dtype=torch.int64))

    # -- what subclasses provide ---------------------------------------------------------
    def _read_base(self, base_rows: np.ndarray) -> torch.Tensor:
        """Rows ``base_rows`` (sorted) of the underlying data, as stored (uint8 or
        float32), on the CPU, in shape (len, *event_shape)."""
        raise NotImplementedError

    def _convert(self, block: torch.Tensor) -> torch.Tensor:
        """A block as stored -> float32 values (uint8 k -> k/255)."""
        return to_unit(block)

    def _subset(self, rows: np.ndarray | None) -> Rows:
        """The same data restricted to ``rows`` (sorted, numbered in the underlying data)."""
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------
    def _base(self, local: np.ndarray) -> np.ndarray:
        """Row numbers of this store -> of the underlying data (sorted stays sorted)."""
        if local.size and (local[0] < 0 or local[-1] >= self.n):
            raise DataError(f"row numbers {int(local[0])}..{int(local[-1])} are outside "
                            f"{self.name} ({self.split})'s {self.n} rows")
        return local if self._rows is None else self._rows[local]

    def _read(self, base_rows: np.ndarray) -> torch.Tensor:
        self.rows_read += int(base_rows.size)
        if self.read_log is not None:
            self.read_log.append(base_rows.copy())
        return self._read_base(base_rows)

    def head(self, limit: int) -> Rows:
        """The first ``limit`` rows (data.train_limit; 0 = all of them)."""
        if limit < 0 or limit > self.n:  # a config value that does not fit the data
            raise ConfigError(f"data.train_limit={limit} must be between 0 (all) and the "
                            f"{self.split} split's {self.n} points")
        if limit in (0, self.n):
            return self
        rows = np.arange(limit, dtype=np.int64)
        out = self._subset(rows if self._rows is None else self._rows[:limit])
        out.y = None if self.y is None else self.y[:limit]
        out.info = self.info
        return out

    def chunk_rows(self) -> int:
        """Rows per chunk of ``statistics`` and ``take``: about CHUNK_BYTES of float32."""
        return max(1, CHUNK_BYTES // (4 * max(1, int(np.prod(self.event_shape)))))

    def _blocks(self, local: np.ndarray) -> Any:
        """The rows ``local`` (sorted) as stored, CPU, in chunks."""
        step = self.chunk_rows()
        for start in range(0, local.size, step):
            yield self._read(self._base(local[start:start + step]))

    def statistics(self, shard: tuple[int, int] = (0, 1),
                   combine: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RowStats:
        """Mean row and value range, computed once in chunks (exact sums: int64 for 8-bit
        data, float64 otherwise); NaN or infinite values are refused.

        Data parallel: with ``shard`` = (rank, world) this process reads only its
        contiguous 1/world of the rows, and ``combine`` (a sum over processes, e.g.
        ``distributed.all_reduce_sum``) joins the parts: every process gets the same
        statistics, for 8-bit data the very numbers of one process.
        """
        if self._stats is None:
            rank, world = shard
            mine = np.array_split(self._summary_rows(), world)[rank]
            part = self._summarise(mine)  # (D + 3,): sums, rows, lo, hi
            table = torch.zeros(world, part.numel(), dtype=torch.float64)
            table[rank] = part
            if combine is not None and world > 1:
                table = combine(table)
            self._stats = self._from_parts(table)
        return self._stats

    def _summary_rows(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64)

    def _summarise(self, local: np.ndarray) -> torch.Tensor:
        """Sums of the rows ``local`` (integers, as float64, for 8-bit data), their count,
        smallest and largest value: one float64 vector (D + 3,)."""
        # numpy's reductions cast in small buffers: no int64/float64 copy of a chunk
        width = int(np.prod(self.event_shape))
        total = np.zeros(width, dtype=np.int64 if self.is_8bit else np.float64)
        lo, hi = np.inf, -np.inf
        for chunk in self._blocks(local):
            block = chunk.numpy().reshape(chunk.shape[0], -1)
            if block.dtype == np.uint8:
                total += np.add.reduce(block, axis=0, dtype=np.int64)
                vmin, vmax = int(block.min()) / 255, int(block.max()) / 255
            else:
                part = np.add.reduce(block, axis=0, dtype=np.float64)
                if not np.isfinite(part).all():
                    bad = int(block.size - np.isfinite(block).sum())
                    raise DataError(f"{self.name} ({self.split}) has {bad} NaN or infinite "
                                    f"values; remove or impute them first")
                total = total + part
                vmin, vmax = float(block.min()), float(block.max())
            lo, hi = min(lo, vmin), max(hi, vmax)
        return torch.from_numpy(np.concatenate([total.astype(np.float64),
                                                [local.size, lo, hi]]))

    def _from_parts(self, table: torch.Tensor) -> RowStats:
        """The statistics of all rows from the processes' parts, (world, D + 3)."""
        width = table.shape[1] - 3
        n = int(table[:, width].sum())
        mean = table[:, :width].sum(0) / n  # exact integer sums for 8-bit data
        if self.is_8bit:
            mean = mean / 255
        lo, hi = float(table[:, width + 1].min()), float(table[:, width + 2].max())
        return RowStats(mean.to(torch.float32).reshape(self.event_shape),
                        float(np.float32(lo)), float(np.float32(hi)), n)

    def take(self, rows: np.ndarray | None = None, *, split: str | None = None) -> ArrayDataset:
        """Rows ``rows`` (sorted; default all) copied into memory as an ArrayDataset (uint8
        stays uint8): for evaluation splits, which are small."""
        local = np.arange(self.n, dtype=np.int64) if rows is None else rows
        values = torch.cat(list(self._blocks(local)))
        y = None if self.y is None else self.y[torch.from_numpy(local)]
        return ArrayDataset(values=values, y=y, name=self.name, split=split or self.split,
                            source=self.source, is_8bit=self.is_8bit and
                            values.dtype == torch.uint8, info=self.info)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={self.n}, "
                f"event_shape={self.event_shape}, {self.storage})")


def _event_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """One row's shape as vaelab trains it: (H, W) images get a channel axis."""
    return (1, *shape) if len(shape) == 2 else tuple(shape)


class TensorRows(Rows):
    """Rows held in one tensor in memory (on the training device once ``to`` is called):
    uint8 for 8-bit data, float32 otherwise (see the module docstring)."""

    def __init__(self, values: torch.Tensor, y: torch.Tensor | None, *, name: str,
                 split: str, source: str, is_8bit: bool, rows: np.ndarray | None = None,
                 scale: int = 255, convert: bool = True):
        if convert and (values.dtype not in (torch.uint8, torch.float32) or values.dim() < 2):
            raise DataError(f"TensorRows needs uint8 or float32 (N, ...) values, got "
                            f"{values.dtype} {tuple(values.shape)}")
        super().__init__(values.shape[0], rows)
        self.convert = convert  # False: batches as stored (a plain tensor given to the trainer)
        self.values = values
        self.event_shape = tuple(values.shape[1:])
        self.is_8bit = is_8bit and values.dtype == torch.uint8
        self.scale = scale  # uint8 k means k / scale (255; 1 for statically binarized bits)
        self.y = None if y is None else (y if rows is None else y[torch.from_numpy(rows)])
        self.name, self.split, self.source = name, split, source
        kind = "bits" if scale == 1 else str(values.dtype).removeprefix("torch.")
        self.storage = f"{kind} in memory"
        self._rows_t = None if rows is None else torch.from_numpy(rows)
        self.device = values.device

    @classmethod
    def of(cls, data: ArrayDataset, *, float32: bool = False) -> TensorRows:
        """A loaded dataset's rows as stored (``float32``: converted, as before uint8
        storage: a float32 copy of the whole split)."""
        values = data.x if float32 else data.values
        rows = cls(values, data.y, name=data.name, split=data.split, source=data.source,
                   is_8bit=data.is_8bit)
        rows.info = data.info
        return rows

    @property
    def index_device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str) -> TensorRows:
        self.device = torch.device(device)
        self.values = self.values.to(self.device)
        if self._rows_t is not None:
            self._rows_t = self._rows_t.to(self.device)
        return self

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        # in memory: no sorting; one index_select of the stored rows, converted on the device
        idx = idx.to(self.values.device)
        if self._rows_t is not None:
            idx = self._rows_t.index_select(0, idx)
        self.rows_read += int(idx.numel())
        if self.read_log is not None:
            self.read_log.append(np.sort(idx.cpu().numpy()))
        return self._convert(self.values.index_select(0, idx))

    def _convert(self, block: torch.Tensor) -> torch.Tensor:
        if not self.convert:
            return block
        if block.dtype == torch.uint8 and self.scale == 1:
            return block.to(torch.float32)
        return to_unit(block)

    def _read_base(self, base_rows: np.ndarray) -> torch.Tensor:
        return self.values.index_select(0, torch.from_numpy(base_rows).to(self.values.device)
                                        ).cpu()

    def _subset(self, rows: np.ndarray | None) -> TensorRows:
        values = self.values
        if self._rows is None and rows is not None and rows.size and rows[-1] == rows.size - 1:
            values, rows = values[:rows.size], None  # the first rows: a view, no mapping
        return TensorRows(values, None, name=self.name, split=self.split, source=self.source,
                          is_8bit=self.is_8bit, rows=rows, scale=self.scale,
                          convert=self.convert)

    def statistics(self, shard: tuple[int, int] = (0, 1),
                   combine: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RowStats:
        if self.values.dtype == torch.float32 and self._rows is None and self._stats is None:
            # float32 storage: the mean as vaelab computed it before uint8 storage (same bits)
            lo, hi = (float(v) for v in torch.aminmax(self.values))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise DataError(f"{self.name} ({self.split}) has NaN or infinite values; "
                                f"remove or impute them first")
            self._stats = RowStats(self.values.mean(0).cpu(), lo, hi, self.n)
        return super().statistics(shard, combine)


def release_pages(array: np.ndarray) -> bool:
    """Drop the pages of a memory-mapped array from this process's resident memory.

    ``madvise(MADV_DONTNEED)`` on a read-only file mapping unmaps its pages from the
    process; the kernel's page cache keeps them, so a later read is a cheap refault, not a
    disk read. numpy keeps the mapping as the private attribute ``_mmap`` of an
    ``np.memmap``: this is the one place that reads it; returns False (nothing done) where
    the attribute or ``madvise`` is missing, and then the store works as before, only
    with resident memory that grows with the rows read.
    """
    mapping = getattr(array, "_mmap", None)
    advise = getattr(mapping, "madvise", None)
    flag = getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or flag is None:
        return False
    try:
        advise(flag)
    except (OSError, ValueError):
        return False
    return True


class ArrayRows(Rows):
    """Rows of numpy arrays (memory-mapped ``.npy`` files, or arrays in memory): one array,
    or shards whose rows are concatenated in the given order (see the module docstring)."""

    def __init__(self, arrays: Sequence[np.ndarray], labels: np.ndarray | None, *,
                 name: str, split: str, source: str, rows: np.ndarray | None = None,
                 files: Sequence[str] | None = None):
        if not arrays:
            raise DataError(f"{name}: no arrays to read")
        names = list(files) if files is not None else [f"array {i}" for i in range(len(arrays))]
        first = arrays[0]
        for what, arr in zip(names, arrays, strict=True):
            if arr.dtype.kind not in "biuf":
                raise DataError(f"{what} has dtype {arr.dtype}, not numbers; save a numeric "
                                f"array (uint8 images or float features)")
            if arr.ndim not in (2, 3, 4) or 0 in arr.shape[1:]:
                raise DataError(f"{what} has shape {arr.shape}; need (N, D) vectors, "
                                f"(N, H, W) or (N, C, H, W) images")
            if arr.shape[1:] != first.shape[1:] or arr.dtype != first.dtype:
                raise DataError(f"{what} holds {arr.dtype} rows of shape {arr.shape[1:]}, but "
                                f"{names[0]} holds {first.dtype} {first.shape[1:]}; every "
                                f"shard needs the same row shape and dtype")
        sizes = [int(a.shape[0]) for a in arrays]
        self.offsets = np.cumsum([0, *sizes])
        if self.offsets[-1] == 0:
            raise DataError(f"{name} holds no rows; save at least one")
        super().__init__(int(self.offsets[-1]), rows)
        self.arrays = list(arrays)
        self.event_shape = _event_shape(first.shape[1:])
        self.is_8bit = first.dtype == np.uint8
        if labels is not None and labels.shape != (self.offsets[-1],):
            raise DataError(f"{name}: {labels.shape[0]} labels for {self.offsets[-1]} rows; "
                            f"save one label per row")
        self._labels = labels
        self.y = None if labels is None else torch.from_numpy(
            (labels if rows is None else labels[rows]).astype(np.int64))
        self.name, self.split, self.source = name, split, source
        mapped = all(isinstance(a, np.memmap) for a in arrays)
        shards = f", {len(arrays)} files" if len(arrays) > 1 else ""
        self.storage = f"{first.dtype} {'memory-mapped' if mapped else 'numpy'}{shards}"
        self._mapped = 0  # bytes of file mapped in since the pages were last released
        self._touched: set[int] = set()  # the arrays read since then

    def _read_base(self, base_rows: np.ndarray) -> torch.Tensor:
        bounds = np.searchsorted(base_rows, self.offsets)
        row_bytes = first_row_bytes(self.arrays[0])
        # rows per piece: a read faults in about FAULT_AROUND bytes of file around each row
        piece = max(1, RELEASE_BYTES // (row_bytes + FAULT_AROUND))
        parts = []
        for k, arr in enumerate(self.arrays):
            local = base_rows[bounds[k]:bounds[k + 1]] - self.offsets[k]
            for a in range(0, local.size, piece):
                rows = local[a:a + piece]
                span = int(rows[-1] - rows[0] + 1)
                if span == rows.size:  # a run of rows: one slice, copied
                    parts.append(np.array(arr[rows[0]:rows[-1] + 1]))
                else:
                    parts.append(np.asarray(arr[rows]))  # fancy indexing reads these rows
                # what the read mapped into this process, at most: each row with the pages
                # around it, or the whole span
                self._mapped += min(rows.size * (row_bytes + FAULT_AROUND),
                                    span * row_bytes + FAULT_AROUND)
                self._touched.add(k)
                if self._mapped >= RELEASE_BYTES:
                    for touched in self._touched:
                        release_pages(self.arrays[touched])
                    self._mapped, self._touched = 0, set()
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if block.dtype != np.uint8:
            block = block.astype(np.float32)
        out = torch.from_numpy(np.ascontiguousarray(block))
        return out.reshape(out.shape[0], *self.event_shape)

    def _subset(self, rows: np.ndarray | None) -> ArrayRows:
        return ArrayRows(self.arrays, self._labels, name=self.name, split=self.split,
                         source=self.source, rows=rows)

    def into_memory(self, *, float32: bool = False) -> TensorRows:
        """All rows copied into a tensor (``data.storage=memory``; ``float32``: converted)."""
        data = self.take()
        return TensorRows.of(data, float32=float32)


def first_row_bytes(array: np.ndarray) -> int:
    """Bytes of one row of ``array``."""
    return int(array.dtype.itemsize * np.prod(array.shape[1:]))


def _item_value(item: Any) -> Any:
    """The x of a Dataset item: the item itself, or the first of an (x, y) pair."""
    return item[0] if isinstance(item, tuple | list) else item


class DatasetRows(Rows):
    """Rows of a ``torch.utils.data.Dataset`` whose items are a tensor (or numpy array) of
    numbers, or an (x, y) pair with an integer label y; read item by item, each checked.

    Items of shape (H, W) get a channel axis; uint8 items are 8-bit data. Every item must
    have item 0's shape and dtype: one that does not (or is not numbers, or has NaN or
    infinite values) raises DataError naming its index.
    """

    def __init__(self, dataset: Any, *, name: str, split: str,
                 rows: np.ndarray | None = None, seed: int = 0):
        try:
            n = len(dataset)
        except TypeError:
            raise DataError(f"data={type(dataset).__name__}: a Dataset needs __len__ (a "
                            "map-style torch.utils.data.Dataset)") from None
        if n < 1:
            raise DataError(f"data={type(dataset).__name__} is empty; pass at least one item")
        super().__init__(n, rows)
        self.dataset = dataset
        self.seed = seed  # of the statistics' sample
        first = self._item_tensor(0, None)
        self.item_shape = tuple(first.shape)
        self.item_dtype = first.dtype
        self.event_shape = _event_shape(self.item_shape)
        if len(self.item_shape) not in (1, 2, 3) or 0 in self.item_shape:
            raise DataError(f"data item 0 has shape {self.item_shape}; items must be (D,) "
                            f"vectors, (H, W) or (C, H, W) images")
        self.is_8bit = first.dtype == torch.uint8
        self.y = None  # labels are read with ``take`` (evaluation splits) only
        self.name, self.split = name, split
        self.source = f"{type(dataset).__name__} ({n} items)"
        self.storage = f"torch Dataset, {str(first.dtype).removeprefix('torch.')} items"
        self.check_unit = False  # refuse items outside [0, 1] as they are read (Bernoulli)

    def _item_tensor(self, index: int, labels: list[int] | None) -> torch.Tensor:
        try:
            item = self.dataset[index]
        except Exception as err:
            raise DataError(f"data item {index} could not be read ({type(err).__name__}: "
                            f"{str(err)[:120]})") from None
        value = _item_value(item)
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            value = torch.from_numpy(np.array(value))
        if not isinstance(value, torch.Tensor) or value.dtype.is_complex \
                or not (value.dtype.is_floating_point or value.dtype in _INT_DTYPES):
            kind = f"a tensor of {value.dtype}" if isinstance(value, torch.Tensor | np.ndarray) \
                else f"a {type(value).__name__}"
            raise DataError(f"data item {index} is {kind}, not a tensor or numpy array of "
                            f"numbers; return one (e.g. torchvision's PILToTensor for images)")
        if hasattr(self, "item_shape"):
            if tuple(value.shape) != self.item_shape:
                raise DataError(f"data item {index} has shape {tuple(value.shape)}, but item 0 "
                                f"has {self.item_shape}; every item needs the same shape")
            if value.dtype != self.item_dtype:
                raise DataError(f"data item {index} has dtype {value.dtype}, but item 0 has "
                                f"{self.item_dtype}; return one dtype for every item")
        if labels is not None:
            label = item[1] if isinstance(item, tuple | list) and len(item) > 1 else None
            if label is None:
                raise DataError(f"data item {index} has no label, but item 0 has one; "
                                f"return (x, y) for every item or x alone for every item")
            try:
                labels.append(int(label))
            except (TypeError, ValueError):
                raise DataError(f"data item {index} has label {label!r:.40}; labels must "
                                "be integers") from None
        return value.detach().cpu()

    def _has_labels(self) -> bool:
        item = self.dataset[0]
        return isinstance(item, tuple | list) and len(item) > 1

    def _read_items(self, base_rows: np.ndarray, labels: list[int] | None) -> torch.Tensor:
        items = [self._item_tensor(int(i), labels) for i in base_rows]
        block = torch.stack(items)
        if block.dtype != torch.uint8:
            block = block.to(torch.float32)
            finite = torch.isfinite(block.flatten(1)).all(1)
            bad = (~finite).nonzero()
            if bad.numel():
                raise DataError(f"data item {int(base_rows[int(bad[0])])} has NaN or infinite "
                                f"values; remove or impute them first")
            if self.check_unit:
                out = ((block < 0) | (block > 1)).flatten(1).any(1).nonzero()
                if out.numel():
                    raise DataError(f"data item {int(base_rows[int(out[0])])} has values "
                                    f"outside [0, 1]: use a Gaussian likelihood, or rescale "
                                    f"the data to [0, 1]")
        return block.reshape(block.shape[0], *self.event_shape)

    def _read_base(self, base_rows: np.ndarray) -> torch.Tensor:
        return self._read_items(base_rows, None)

    def _summary_rows(self) -> np.ndarray:
        if self.n <= SAMPLE_ROWS:
            return np.arange(self.n, dtype=np.int64)
        return np.sort(np.random.default_rng(self.seed).choice(self.n, SAMPLE_ROWS,
                                                               replace=False))

    def _subset(self, rows: np.ndarray | None) -> DatasetRows:
        return DatasetRows(self.dataset, name=self.name, split=self.split, rows=rows,
                           seed=self.seed)

    def take(self, rows: np.ndarray | None = None, *, split: str | None = None) -> ArrayDataset:
        local = np.arange(self.n, dtype=np.int64) if rows is None else rows
        labels: list[int] | None = [] if self._has_labels() else None
        values = self._read_items(self._base(local), labels)
        self.rows_read += int(local.size)
        y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
        return ArrayDataset(values=values, y=y, name=self.name, split=split or self.split,
                            source=self.source, is_8bit=self.is_8bit, info=self.info)


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


class WrappedRows(Rows):
    """A store whose batches are another store's, transformed (``transform``)."""

    def __init__(self, base: Rows, what: str):
        super().__init__(base.n, None)
        self.base = base
        self.event_shape, self.is_8bit, self.y = base.event_shape, base.is_8bit, base.y
        self.name, self.split, self.source = base.name, base.split, base.source
        self.storage = f"{base.storage}, {what}"
        self.device = base.device
        self.info = base.info

    @property
    def index_device(self) -> torch.device:
        return self.base.index_device

    def to(self, device: torch.device | str) -> WrappedRows:
        self.base.to(device)
        self.device = torch.device(device)
        return self

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.transform(idx, self.base.gather(idx))

    def transform(self, idx: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The batch of rows ``idx`` (float32, on the device) as this store gives it."""
        raise NotImplementedError


class BinarizedRows(WrappedRows):
    """Static binarization of a store, made per batch: element j of row r is 1 iff uniform
    number r * D + j of the SplitMix64 stream of ``seed`` is below it, exactly the bits
    ``fixed_binarization`` gives the whole split at once (D = values per row)."""

    def __init__(self, base: Rows, seed: int):
        super().__init__(base, "binarized per batch")
        self.seed, self.is_8bit = seed, False

    def transform(self, idx: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        u = uniforms_at(self.seed, positions(idx.cpu().numpy(), batch[0].numel()))
        u_t = torch.from_numpy(u.reshape(tuple(batch.shape))).to(batch.device)
        return (u_t < batch.to(torch.float64)).to(torch.float32)


def positions(rows: np.ndarray, width: int) -> np.ndarray:
    """(len(rows), width) element numbers, C order, of rows ``rows`` of ``width`` values."""
    return rows.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)


def static_binarization(rows: Rows, seed: int) -> Rows:
    """``data.binarize=static`` for a store: in memory, the bits computed once in chunks and
    kept as uint8 (a quarter of float32); otherwise drawn per batch (:class:`BinarizedRows`)."""
    if not isinstance(rows, TensorRows):
        return BinarizedRows(rows, seed)
    width = int(np.prod(rows.event_shape))
    step = rows.chunk_rows()
    bits = []
    for start in range(0, rows.n, step):
        local = np.arange(start, min(start + step, rows.n), dtype=np.int64)
        p = rows._convert(rows._read_base(rows._base(local))).to(torch.float64)
        u = torch.from_numpy(uniforms_at(seed, positions(local, width)).reshape(tuple(p.shape)))
        bits.append((u < p).to(torch.uint8))
    out = TensorRows(torch.cat(bits).to(rows.values.device), rows.y, name=rows.name,
                     split=rows.split, source=rows.source, is_8bit=False, scale=1)
    out.info = rows.info
    return out


class LabelledRows(WrappedRows):
    """model.conditional: each batch as (b, D + C), flattened x then the one-hot label
    (``join``: prepare.with_labels on the batch's rows); the labels stay in memory."""

    def __init__(self, base: Rows, join: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        assert base.y is not None  # checked by resolve_label_classes
        super().__init__(base, "with one-hot labels")
        self.join = join

    def transform(self, idx: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        assert self.y is not None
        y = self.y.index_select(0, idx.to(self.y.device)).to(batch.device)
        return self.join(batch, y)


def as_rows(x: torch.Tensor | Rows) -> Rows:
    """A tensor (float32 (N, ...), as the trainer took before stores) or a store."""
    if isinstance(x, Rows):
        return x
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise DataError(f"training data must be a tensor (N, ...) or a vaelab.data.rows store, "
                        f"got {type(x).__name__}")
    return TensorRows(x, None, name="tensor", split="train", source="a tensor",
                      is_8bit=False, convert=False)  # batches exactly as x.index_select gives


__all__ = ["ArrayRows", "BinarizedRows", "DatasetRows", "LabelledRows", "RowStats", "Rows",
           "TensorRows", "WrappedRows", "as_rows", "release_pages", "static_binarization"]
