"""``vaelab plot RUN``: draw the pictures of a run (latent space, samples, curves, ...)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vaelab.viz.figures import KINDS

    p = sub.add_parser("plot", help="draw a run's pictures: posterior scatter, prior grid, "
                                    "interpolation, samples, curves, KL per dimension, ...",
                       description="Draw pictures of a trained run. Pictures that do not "
                                   "apply (an image grid for tabular data, a prior grid for "
                                   "categorical latents) are skipped with the reason.")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("--what", "-w", default="all",
                   help=f"comma-separated pictures, or all (default): {', '.join(KINDS)}")
    p.add_argument("--out", "-o", help="folder for the pictures (default: the run folder)")
    p.add_argument("--dims", help="two latent dimensions i,j for scatter, animation and grid "
                                  "(default: 2-D latents directly, else PCA; grid: 0,1)")
    p.add_argument("--grid-kind", choices=["linear", "quantile"], default="linear",
                   help="prior grid: equally spaced over [-3, 3], or N(0,1) quantiles")
    p.add_argument("--n", type=int, default=None,
                   help="size: grid points per axis (15), samples (64), reconstructions (16), "
                        "interpolation steps (10)")
    p.add_argument("--points", type=int, default=2000, help="test points in the scatter")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaelab.api import load_run
    from vaelab.viz.figures import Options, parse_dims, parse_kinds, render

    kinds = parse_kinds(args.what)
    dims = parse_dims(args.dims)
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    if args.points < 2:
        raise ValueError(f"--points must be at least 2, got {args.points}")
    run_ = load_run(args.run, checkpoint=args.checkpoint)
    options = Options(dims=dims, grid_kind=args.grid_kind, n=args.n, points=args.points)
    for figure in render(run_, kinds, args.out, options):
        if figure.path is not None:
            print(f"{figure.kind:16s} {figure.path}")
        else:
            print(f"{figure.kind:16s} skipped: {figure.note}")
    return 0
