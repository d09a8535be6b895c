"""``vaelab export RUN OUT``: the trained model as a small folder to share (model card,
config, meta, model.safetensors), loadable with ``vaelab.load_run(OUT)``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write a run's model as a shareable folder "
                                      "(safetensors weights, config, model card)",
                       description="Write OUT with README.md (a model card: test numbers, "
                                   "objective audit, samples), config.toml, meta.json, "
                                   "model.safetensors and samples.png: the Hugging Face Hub's "
                                   "layout, loadable with vaelab.load_run(OUT).")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("out", help="folder to write (new, or an earlier export)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from vaelab.api import load_run
    from vaelab.viz.export import export_run

    run_ = load_run(args.run, checkpoint=args.checkpoint)
    samples = Path(run_.path) / "samples.png"
    with tempfile.TemporaryDirectory() as tmp:
        if not samples.is_file():  # an older run without pictures: draw the one we need
            from vaelab.viz.figures import render

            drawn = render(run_, ["samples"], tmp)[0]
            samples = drawn.path if drawn.path is not None else samples
        files = export_run(run_, args.out, samples=samples)
    size = sum(f.stat().st_size for f in files)
    print(f"exported {Path(args.out)}: " + ", ".join(f.name for f in files)
          + f" ({size / 1e6:.1f} MB)")
    return 0
