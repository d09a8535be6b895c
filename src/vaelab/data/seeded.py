"""Single-array files cut by the seeded split, and what a run records about such data.

A file that holds one array (an ``.npz`` with ``x``, an IDX file, an image folder, a
table) has no splits of its own: :func:`seeded_dataset` takes the rows of one split from
``splits.split_rows`` (shares ``data.split_fractions``, seed ``data.split_seed``) and
records the split in ``ArrayDataset.info["split"]``. The loaders add what else a run must
keep (an image folder's class names, a table's columns and standardisation); the run
writes ``info`` to meta.json and summary.json, and :func:`data_line` is the line the
end-of-run summary prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.config import DataConfig

from .dataset import ArrayDataset, labels_to_tensor, make_dataset
from .errors import DataError
from .splits import SPLIT_ORDER, split_rows, split_sizes


def split_record(n: int, fractions: Sequence[float], seed: int) -> dict[str, Any]:
    """The seeded split of ``n`` rows as a JSON record: shares, seed, rows per split
    (``sizes`` is None when ``n`` rows cannot fill every share; only split "all" loads then)."""
    try:
        sizes: dict[str, int] | None = dict(zip(SPLIT_ORDER, split_sizes(n, fractions),
                                                strict=True))
    except DataError:
        sizes = None
    return {"method": "seeded", "rows": n, "fractions": [float(f) for f in fractions],
            "seed": seed, "sizes": sizes}


def seeded_dataset(x: np.ndarray, y: np.ndarray | None, split: str, options: DataConfig, *,
                   name: str, source: str, info: dict[str, Any] | None = None) -> ArrayDataset:
    """One split of a single array (N, ...) with optional labels (N,), cut by the seeded
    split of ``options`` (split "all": every row, in file order)."""
    what = f"{name} [{split}]"
    if x.ndim < 2 or x.shape[0] == 0:  # not rows of data: make_dataset names the problem
        return make_dataset(x, y, name=name, split=split, source=source, what=what)
    n = x.shape[0]
    if y is not None:
        labels_to_tensor(y, n, what)  # one label per row, before rows are picked
    rows = split_rows(n, split, options.split_fractions, options.split_seed)
    if split != "all":
        x, y = x[rows], None if y is None else y[rows]
    record = split_record(n, options.split_fractions, options.split_seed)
    return make_dataset(x, y, name=name, split=split, source=source, what=what,
                        info={**(info or {}), "split": record})


def _split_text(record: dict[str, Any]) -> str:
    shares = ", ".join(f"{f:g}" for f in record["fractions"])
    text = (f"seeded split of {record['rows']} rows (data.split_fractions=[{shares}], "
            f"data.split_seed={record['seed']})")
    if record.get("sizes"):
        text += ": " + ", ".join(f"{k} {v}" for k, v in record["sizes"].items())
    return text


def data_line(name: str, info: dict[str, Any]) -> str:
    """One line on data from a file, for the end-of-run summary ("" when there is nothing
    beyond the name to say, as for the built-in datasets)."""
    parts = []
    if info.get("split"):
        parts.append(_split_text(info["split"]))
    if info.get("classes"):
        names = [f"{k}={v}" for k, v in info["classes"].items()]
        more = f", ... ({len(names)} in all)" if len(names) > 8 else ""
        parts.append(f"labels {', '.join(names[:8])}{more}")
    if info.get("image_size"):
        h, w = info["image_size"]
        parts.append(f"images {h}x{w} ({info.get('image_fit', 'as stored')})")
    if info.get("columns"):
        parts.append(f"{len(info['columns'])} columns")
    if info.get("standardize"):
        parts.append("standardised by the training split's column means and stds "
                     "(Run.sample and Run.reconstruct give the original units)")
    return f"data: {name}: " + "; ".join(parts) if parts else ""
