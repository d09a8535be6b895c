"""Tables of numbers for tabular VAEs: ``data.name = "table.csv"`` (or ``.tsv``, ``.parquet``).

CSV/TSV is read with the standard library's ``csv`` module: a header row of column names,
then one row per datapoint, every cell a number. Parquet needs pyarrow, the optional extra
``pip install 'vaelab[tables]'``. ``data.label_column`` names a column of labels instead of
data: integers are kept, any other values are class names, sorted and numbered 0, 1, ...
(the map is recorded in ``info["classes"]``).

The rows (x float (N, D), D = the data columns) are cut by the seeded split (``seeded``);
with ``data.standardize`` (default) every column is standardised by the training split's
mean and std (``standardize``), recorded in ``info["standardize"]`` so samples come back
in the table's units. A table is never 8-bit; it needs a Gaussian likelihood
(``prepare.load_split`` refuses others).

Bad input is a one-line :class:`DataError` naming the file, the column and the first bad
row: a non-numeric value, a missing value (empty, NA, NaN, null, None), an infinite one, a
ragged row, an empty table. vaelab does not impute.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.config import DataConfig

from .dataset import ArrayDataset
from .errors import DataError
from .seeded import seeded_dataset
from .splits import split_rows
from .standardize import Standardization

SUFFIXES = (".csv", ".tsv", ".parquet")
MISSING = ("", "na", "n/a", "nan", "null", "none")
EXTRA = "pip install 'vaelab[tables]'"


def is_table(name: str) -> bool:
    """A path to a CSV, TSV or Parquet file (by its suffix)."""
    return Path(name).suffix.lower() in SUFFIXES


@dataclass(frozen=True)
class Table:
    """A table as read: data columns' names, values (N, D) float64, labels (N,) or None."""

    columns: list[str]
    x: np.ndarray
    y: np.ndarray | None
    classes: dict[str, int] | None  # label name -> integer, for non-integer label values


def _numbers(values: Sequence[Any], path: Path, name: str,
             where: Callable[[int], str]) -> np.ndarray:
    """One column's cells as float64 (N,); DataError naming the first bad row."""
    try:
        column = np.array(values, dtype=np.float64)
        if np.isfinite(column).all():
            return column
    except (ValueError, TypeError):
        pass
    for i, cell in enumerate(values):
        text = "" if cell is None else str(cell).strip()
        if text.lower() in MISSING:
            raise DataError(f"{path}: column {name!r} has a missing value in {where(i)}; fill "
                            f"in or drop rows with missing values first (vaelab does not "
                            f"impute)")
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{path}: column {name!r} is not numeric: {where(i)} holds "
                            f"{text[:40]!r}; encode it as numbers, drop the column, or name "
                            f"it in data.label_column") from None
        if not math.isfinite(value):
            raise DataError(f"{path}: column {name!r} has an infinite value in {where(i)}; "
                            f"replace or drop it")
    raise AssertionError("unreachable: numpy refused a column float() accepts")


def _labels(values: Sequence[Any], path: Path, name: str,
            where: Callable[[int], str]) -> tuple[np.ndarray, dict[str, int] | None]:
    """The label column: integers as they are, else class names numbered in sorted order."""
    texts = []
    for i, cell in enumerate(values):
        text = "" if cell is None else str(cell).strip()
        if text.lower() in MISSING:
            raise DataError(f"{path}: label column {name!r} has a missing value in "
                            f"{where(i)}; give every row a label")
        texts.append(text)
    try:
        return np.array([int(t) for t in texts], dtype=np.int64), None
    except ValueError:
        classes = {c: k for k, c in enumerate(sorted(set(texts)))}
        return np.array([classes[t] for t in texts], dtype=np.int64), classes


def _table(path: Path, header: list[str], cells: Sequence[Sequence[Any]],
           label_column: str, where: Callable[[int], str]) -> Table:
    """Columns of cells (one list per column) -> a checked :class:`Table`."""
    if not cells or not len(cells[0]):
        raise DataError(f"{path} has no rows of data (columns: {', '.join(header)[:80]}); a "
                        f"table needs a header row and at least one row of numbers")
    if label_column and label_column not in header:
        raise DataError(f"data.label_column={label_column!r} is not a column of {path} "
                        f"(columns: {', '.join(header)[:120]}); name one of them or ''")
    names = [c for c in header if c != label_column]
    if not names:
        raise DataError(f"{path} has no data columns besides the label column "
                        f"{label_column!r}; add columns of numbers")
    by_name = dict(zip(header, cells, strict=True))
    x = np.stack([_numbers(by_name[c], path, c, where) for c in names], axis=1)
    y, classes = _labels(by_name[label_column], path, label_column, where) \
        if label_column else (None, None)
    return Table(names, x, y, classes)


def _header(path: Path, names: list[str]) -> list[str]:
    names = [n.strip() for n in names]
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}: column {i + 1} of the header row has no name; name "
                            f"every column (the first row holds the column names)")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DataError(f"{path}: column name {dup!r} appears twice in the header row; give "
                        f"every column its own name")
    return names


def read_csv(path: Path, label_column: str = "") -> Table:
    """A CSV (or, by suffix, tab-separated) file with a header row; see the module doc."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            first = next(reader, None)
            if first is None:
                raise DataError(f"{path} is empty; a table needs a header row of column "
                                f"names and at least one row of numbers")
            header = _header(path, first)
            for row in reader:
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields "
                                    f"but the header row names {len(header)} columns; give "
                                    f"every row one value per column")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the table as UTF-8 CSV") from None
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV file ({err}); save it as plain CSV "
                        f"with a header row") from None
    cells = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in header]
    return _table(path, header, cells, label_column,
                  lambda i: f"row {i + 1} (line {lines[i]})")


def read_parquet(path: Path, label_column: str = "") -> Table:
    """A Parquet file (pyarrow, the extra vaelab[tables]); numeric or numeric-text columns."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet files needs pyarrow: {EXTRA} (or save the "
                        f"table as CSV)") from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path} is not a readable Parquet file ({reason[:120]}); write it "
                        f"with pyarrow or pandas.DataFrame.to_parquet") from None
    header = _header(path, list(table.column_names))
    cells: list[Sequence[Any]] = []
    for name in header:
        column = table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) \
                or pa.types.is_boolean(kind):
            cells.append(column.to_pylist())  # None marks a null
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind) \
                or pa.types.is_dictionary(kind) or name == label_column:
            cells.append([None if v is None else str(v) for v in column.to_pylist()])
        else:
            raise DataError(f"{path}: column {name!r} has type {kind}, not numbers; encode it "
                            f"as numbers or drop it")
    return _table(path, header, cells, label_column, lambda i: f"row {i + 1}")


@functools.lru_cache(maxsize=1)  # a run loads several splits of one table: parse it once
def _read(path: Path, size: int, mtime_ns: int, label_column: str) -> Table:
    del size, mtime_ns  # part of the cache key only: a changed file is read anew
    if path.suffix.lower() == ".parquet":
        return read_parquet(path, label_column)
    return read_csv(path, label_column)


def read_table(path: str | Path, label_column: str = "") -> Table:
    """The table at ``path`` (CSV, TSV or Parquet), checked; cached until the file changes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    stat = path.stat()
    return _read(path, stat.st_size, stat.st_mtime_ns, label_column)


def load_table(path: str | Path, split: str, options: DataConfig | None = None
               ) -> ArrayDataset:
    """One split of a table (see the module docstring); ``options``: label column,
    standardisation, the seeded split's shares and seed (default: DataConfig's)."""
    options = options or DataConfig()
    table = read_table(path, options.label_column)
    x = table.x
    info: dict[str, Any] = {"kind": "table", "dtype": "float64", "columns": table.columns,
                            "label_column": options.label_column or None}
    if table.classes:
        info["classes"] = table.classes
    if options.standardize:  # by the rows the model trains on, so no test row leaks in
        train = split_rows(len(x), options.train_split, options.split_fractions,
                           options.split_seed)
        stats = Standardization.fit(x[train])
        x = stats.apply(x)
        info["standardize"] = {**stats.record(table.columns), "fitted_on": options.train_split}
    return seeded_dataset(x, table.y, split, options, name=str(path), source=f"{path} (table)",
                          info=info)
