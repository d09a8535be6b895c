"""``vaelab data list`` and ``vaelab data fetch NAME``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="list datasets or fetch one into the cache")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    lst = dsub.add_parser("list", help="each dataset, whether it is available and from where")
    lst.set_defaults(func=run_list)
    fetch = dsub.add_parser("fetch", help="put a dataset in the cache (verified by checksum)")
    fetch.add_argument("name", help="dataset name, e.g. mnist")
    fetch.add_argument("--data-dir", help="look in this directory first")
    fetch.set_defaults(func=run_fetch)


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
