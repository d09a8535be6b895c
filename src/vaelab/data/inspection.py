"""``vaelab data inspect PATH``: what vaelab would train on, before training on it.

For any name ``load_dataset`` reads (a built-in dataset, an .npz, an IDX file, an image
folder, a table): rows per split, the shape of one row, how the values are stored, their
range as the model sees them (8-bit data scaled to [0, 1]; a table before
standardisation), label counts, and which likelihoods fit: Bernoulli and continuous
Bernoulli need values in [0, 1], logistic-256 needs 8-bit data, a Gaussian fits anything
(and is the one a table takes). An image folder also shows the sizes and colour modes of
its files, and a problem that stops it from loading (mixed sizes, say) is reported after
those facts instead of hiding them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vaelab.config import DataConfig, LikelihoodName

from .dataset import ArrayDataset
from .errors import DataError
from .loading import kind_of, load_dataset
from .seeded import split_record
from .userfiles import npz_splits

KIND_NAMES = {"cifar10": "built-in (CIFAR-10)", "cifar-batches": "CIFAR-10 python batches",
              "built-in": "built-in", "npz": ".npz file", "idx": "IDX file",
              "npy": ".npy file(s), memory-mapped", "table": "table",
              "image-folder": "image folder"}
OWN_SPLITS = ("train", "valid", "test")  # loaded one by one where the data have their own


@dataclass
class Inspection:
    """The facts ``vaelab data inspect`` prints (``--json``: this, as a dict)."""

    name: str
    kind: str
    rows: dict[str, int]  # per split ("all" too for a file the seeded split cuts)
    event_shape: list[int]
    stored_as: str
    is_8bit: bool
    value_range: list[float]  # [min, max] of the values as the model sees them
    labels: dict[str, int] | None  # label ("name=k" or "k") -> rows, over all splits
    likelihoods: dict[str, str]  # name -> "yes" or why not
    details: list[str] = field(default_factory=list)  # split, image sizes, columns, ...
    problem: str = ""  # why the data cannot be loaded as configured ("" = none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self, *, problem: bool = True) -> list[str]:
        """The human-readable report, one fact per line (``problem``: with its last line)."""
        out = [f"{self.name}: {self.kind}"]
        if self.rows:
            out.append("rows: " + ", ".join(f"{k} {v}" for k, v in self.rows.items()))
        if self.event_shape:
            out.append(f"shape of one row: {tuple(self.event_shape)}; stored as "
                       f"{self.stored_as}")
            lo, hi = self.value_range
            out.append(f"values: [{lo:.6g}, {hi:.6g}]" + (" (k/255)" if self.is_8bit else ""))
            out.append("labels: none" if not self.labels else
                       f"labels: {len(self.labels)} values: " + ", ".join(
                           f"{k}: {v}" for k, v in self.labels.items()))
        out += self.details
        if self.likelihoods:
            out.append("likelihoods: " + "; ".join(f"{k} {v}"
                                                    for k, v in self.likelihoods.items()))
        if self.problem and problem:
            out.append(f"problem: {self.problem}")
        return out


def likelihood_fit(lo: float, hi: float, is_8bit: bool, table: bool) -> dict[str, str]:
    """For each model.likelihood, "yes" or why it does not fit data with this range."""
    fits = {}
    for name in typing.get_args(LikelihoodName):
        if table and name != "gaussian":
            fits[name] = "no (a table takes model.likelihood=gaussian)"
        elif name in ("bernoulli", "continuous-bernoulli"):
            fits[name] = "yes" if lo >= 0 and hi <= 1 else \
                "no (values outside [0, 1]; needs data in [0, 1])"
        elif name == "logistic-256":
            fits[name] = "yes" if is_8bit else "no (needs 8-bit data: uint8 values k/255)"
        elif name == "gaussian":
            fits[name] = "yes"
        else:  # a likelihood this table does not know yet
            fits[name] = "unknown"
    return fits


def _label_counts(parts: list[ArrayDataset]) -> dict[str, int] | None:
    ys = [d.y for d in parts if d.y is not None]
    if not ys:
        return None
    counts = Counter(torch.cat(ys).tolist())
    names = {v: k for k, v in (parts[0].info.get("classes") or {}).items()}
    return {(f"{names[k]}={k}" if k in names else str(k)): counts[k] for k in sorted(counts)}


def _parts(name: str, kind: str, options: DataConfig) -> tuple[dict[str, int],
                                                                list[ArrayDataset]]:
    """Rows per split, and the loaded data (every row once) the other facts come from."""
    own = OWN_SPLITS if kind in ("built-in", "cifar10", "cifar-batches") else \
        npz_splits(name) if kind == "npz" else None
    if own:
        parts = [load_dataset(name, s, data_dir=options.data_dir or None, options=options)
                 for s in own]
        return {d.split: len(d) for d in parts}, parts
    data = load_dataset(name, "all", options=options)
    record = split_record(len(data), options.split_fractions, options.split_seed)
    return {"all": len(data), **(record["sizes"] or {})}, [data]


def _details(kind: str, data: ArrayDataset, options: DataConfig) -> list[str]:
    out = []
    record = data.info.get("split")
    if record:
        shares = ", ".join(f"{f:g}" for f in record["fractions"])
        out.append(f"split: seeded (data.split_fractions=[{shares}], "
                   f"data.split_seed={record['seed']})" + ("" if record["sizes"] else
                                                           "; too few rows for every share"))
    if kind == "table":
        x = data.x.double()
        for i, column in enumerate(data.info["columns"][:20]):
            col = x[:, i]
            out.append(f"  column {column!r}: mean {col.mean():.6g}, std "
                       f"{col.std(unbiased=False):.6g}, min {col.min():.6g}, max "
                       f"{col.max():.6g}")
        if len(data.info["columns"]) > 20:
            out.append(f"  ... {len(data.info['columns']) - 20} more columns")
        out.append("trains standardised per column by the training split's mean and std"
                   if options.standardize else "trains on the values as they are "
                   "(data.standardize=false)")
    return out


def _folder_facts(name: str) -> list[str]:
    """An image folder's files by size and colour mode, from their headers alone."""
    from .images import scan

    files = scan(name)
    sizes = Counter(f"{f.size[0]}x{f.size[1]}" for f in files).most_common()
    modes = Counter(f.mode for f in files).most_common()

    def show(counts: list[tuple[str, int]]) -> str:
        text = ", ".join(f"{k}: {v}" for k, v in counts[:6])
        return text + (f", ... ({len(counts)} in all)" if len(counts) > 6 else "")

    return [f"files: {len(files)}; sizes (width x height): {show(sizes)}",
            f"colour modes: {show(modes)}"]


def inspect_data(name: str, options: DataConfig | None = None) -> Inspection:
    """The facts about ``name`` as ``options`` (image size, label column, split, ...) would
    load it; a table is shown in its own units (no standardisation)."""
    options = options or DataConfig()
    kind = kind_of(name)
    facts = _folder_facts(name) if kind == "image-folder" else []
    # a table's own units: standardised values all have mean 0 and std 1
    as_loaded = dataclasses.replace(options, standardize=False) if kind == "table" else options
    try:
        rows, parts = _parts(name, kind, as_loaded)
    except DataError as err:
        if kind != "image-folder":
            raise
        return Inspection(name, KIND_NAMES[kind], {}, [], "", False, [0.0, 0.0], None, {},
                          facts, problem=str(err))
    first = parts[0]
    lo = min(float(d.x.min()) for d in parts)
    hi = max(float(d.x.max()) for d in parts)
    is_8bit = all(d.is_8bit for d in parts)
    stored = first.info.get("dtype") or ("uint8" if is_8bit else "float32")
    stored += " (8-bit, scaled to k/255)" if is_8bit else ""
    return Inspection(name, KIND_NAMES[kind], rows, list(first.event_shape), stored, is_8bit,
                      [lo, hi], _label_counts(parts),
                      likelihood_fit(lo, hi, is_8bit, table=kind == "table"),
                      facts + _details(kind, first, options))
