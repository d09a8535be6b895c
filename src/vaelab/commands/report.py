"""``vaelab report RUN``: write the run's self-contained ``report.html``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run",
                       description="Write report.html: config, test numbers, metrics per "
                                   "epoch, every picture (embedded), the evaluation JSON. "
                                   "Pictures missing from the run folder are drawn first.")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("--out", "-o", help="output file (default RUN/report.html)")
    p.add_argument("--redraw", action="store_true", help="redraw every picture first")
    p.add_argument("--no-draw", action="store_true", help="only use pictures already there")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vaelab.training.runs import RunDir
    from vaelab.viz.report import write_report

    run_dir = RunDir.existing(args.run)
    if not args.no_draw:
        from vaelab.viz.figures import FILENAMES, TRAIN_KINDS, render

        kinds = [k for k in TRAIN_KINDS
                 if args.redraw or not (run_dir.path / FILENAMES[k]).is_file()]
        if kinds:
            from vaelab.api import load_run

            for figure in render(load_run(run_dir.path), kinds):
                if figure.path is None and args.redraw:
                    print(f"{figure.kind:16s} skipped: {figure.note}")
    path = write_report(run_dir.path, args.out)
    print(f"report: {Path(path).resolve()}")
    return 0
