"""``vaelab train``: config file + overrides -> a trained, evaluated run folder."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a VAE (default: MNIST, a few minutes on a CPU)",
                       description="Train a VAE and write a run folder: config, checkpoints, "
                                   "metrics.jsonl, summary.json and pictures.")
    p.add_argument("--config", "-c", help="TOML config file (see configs/)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5")
    p.add_argument("--out", "-o", help="run folder (default runs/<dataset>-<latent>-<time>)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN from its last checkpoint; with --set train.epochs=N "
                        "(or train.time_limit_minutes) extend a finished run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (the new run starts empty; the old "
                        "one is deleted once the new one has its first checkpoint)")
    p.add_argument("--evaluate", action="store_true",
                   help="with --resume: evaluate again even when nothing was left to train")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks for training (= --set train.compile=true)")
    p.add_argument("--precision", choices=["float32", "bf16"],
                   help="training precision (= --set train.precision=...); evaluation is "
                        "always float32")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine: DistributedDataParallel, "
                        "launched with torchrun (see docs/scale.md)")
    p.set_defaults(func=run)


def launch(args: argparse.Namespace) -> int:
    """Run this same command in ``args.nproc`` processes under PyTorch's launcher."""
    from vaelab.api import default_run_name
    from vaelab.build import validate
    from vaelab.config import load_config

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        raise ValueError("--nproc launches torchrun itself; under torchrun, drop --nproc")
    out = args.out
    if not args.resume:  # fail here, not in N processes
        config = validate(load_config(args.config, args.overrides))
        out = out or default_run_name(config)  # all ranks must name the same folder
    forwarded = [*(["--config", args.config] if args.config else []),
                 *(a for o in args.overrides for a in ("--set", o)),
                 *(["--out", out] if out else []),
                 *(["--resume", args.resume] if args.resume else []),
                 *(["--overwrite"] if args.overwrite else []),
                 *(["--evaluate"] if args.evaluate else []),
                 *(["--no-progress"] if args.no_progress else []),
                 *(["--compile"] if args.compile else []),
                 *(["--precision", args.precision] if args.precision else [])]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.nproc}", "-m", "vaelab", "train", *forwarded]
    return subprocess.call(command)


def run(args: argparse.Namespace) -> int:
    from vaelab.api import fit
    from vaelab.commands.eval import report_lines
    from vaelab.config import load_config

    if args.resume and (args.config or args.out):
        raise ValueError("--resume continues a run with its saved config; drop --config/--out "
                         "(--set train.epochs=N extends it)")
    if args.evaluate and not args.resume:
        raise ValueError("--evaluate applies to --resume RUN (a new run is always evaluated)")
    if args.resume and (args.compile or args.precision):
        raise ValueError("--resume continues a run with its saved config; drop --compile/"
                         "--precision")
    if args.nproc is not None:
        return launch(args)
    if args.resume:
        changes = [*args.overrides, *(["train.progress=false"] if args.no_progress else [])]
        run_ = fit(None, resume=args.resume, changes=changes, evaluate=args.evaluate or None)
    else:
        config = load_config(args.config, [
            *args.overrides, *(["train.compile=true"] if args.compile else []),
            *([f"train.precision={args.precision}"] if args.precision else [])])
        if args.no_progress:
            config.train.progress = False
        run_ = fit(config, out=args.out, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 reports
        return 0
    summary = json.loads((run_.path / "summary.json").read_text())
    test = summary.get("test", {})
    print(f"run folder: {run_.path}")
    if summary.get("data", {}).get("line"):
        print(summary["data"]["line"])
    print(f"trained {summary['epochs']} epochs in {summary['train_seconds']:.0f} s "
          f"({summary['images_per_sec']:.0f} images/s); stop: {summary['stop_reason']}")
    if test:
        print("\n".join(report_lines(test)))
    if summary.get("test_note"):
        print(f"note: {summary['test_note']}")
    audit = summary.get("objective_audit", {})
    if "line" in audit:
        print(audit["line"])
    for warning in summary.get("warnings", []):
        print(f"WARNING: {warning}")
    if summary["pictures"]:
        print("pictures: " + ", ".join(str(run_.path / p) for p in summary["pictures"]))
    return 0
