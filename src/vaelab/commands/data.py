"""``vaelab data list``, ``vaelab data fetch NAME`` and ``vaelab data inspect PATH``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="list datasets, fetch one into the cache, or inspect one")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    lst = dsub.add_parser("list", help="each dataset, whether it is available and from where")
    lst.set_defaults(func=run_list)
    fetch = dsub.add_parser("fetch", help="put a dataset in the cache (verified by checksum)")
    fetch.add_argument("name", help="dataset name, e.g. mnist")
    fetch.add_argument("--data-dir", help="look in this directory first")
    fetch.set_defaults(func=run_fetch)
    ins = dsub.add_parser("inspect", help="shape, value range, labels and the likelihoods that "
                                          "fit, for a dataset name or a file/folder path",
                          description="What vaelab would train on: rows per split, shape, "
                                      "how values are stored, their range, label counts, and "
                                      "which model.likelihood fits. data.* options (image "
                                      "size, label column, split) come from -c/--set.")
    ins.add_argument("name", metavar="PATH", help="a dataset name (mnist) or a path: .npz, "
                                                  "IDX, an image folder, .csv/.parquet")
    ins.add_argument("--config", "-c", help="TOML config file whose [data] section applies")
    ins.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="a data option, e.g. data.image_size=32")
    ins.add_argument("--json", action="store_true", help="the facts as JSON")
    ins.set_defaults(func=run_inspect)


def run_list(args: argparse.Namespace) -> int:
    from vaelab.data import cache_dir, dataset_status

    print(f"cache: {cache_dir()}  (set VAELAB_DATA to move it)")
    for status in dataset_status():
        state = "available" if status.available else "missing"
        where = status.where or f"fetch with: {status.fetch_command}"
        print(f"{status.name:15s} {state:10s} {where}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from vaelab.data import fetch_dataset

    path = fetch_dataset(args.name, data_dir=args.data_dir)
    print(f"{args.name}: {path}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    import json

    from vaelab.config import load_config
    from vaelab.data.errors import DataError
    from vaelab.data.inspection import inspect_data

    options = load_config(args.config, args.overrides).data
    report = inspect_data(args.name, options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines(problem=False)))
    if report.problem:  # the facts are printed; the problem ends the command as an error
        raise DataError(report.problem)
    return 0
