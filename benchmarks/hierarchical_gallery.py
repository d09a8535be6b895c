"""The hierarchical and conditional pictures of the gallery: a short run, its pictures.

    python benchmarks/hierarchical_gallery.py              # about a minute on one thread
    python benchmarks/hierarchical_gallery.py --epochs 30

Trains configs/hierarchical.toml (two layers, top-down ladder, IWAE K=5) with
``model.conditional=true`` on the gallery's short MNIST subset (``gallery.py``: the first
5000/1000/1000 train/valid/test digits), so every epoch records validation KL and active
units per layer, and copies four of its pictures as small palette PNGs to docs/gallery/:
``hierarchical-layer-samples.png`` (top layer fixed, lower layers resampled),
``hierarchical-class-grid.png`` (samples per label), ``hierarchical-kl-per-layer.png`` (KL
per layer over training) and ``hierarchical-relabel.png`` (test codes decoded under every
label). The same pictures come from ``vaelab plot RUN --what
layers,classes,kl_layers,relabel``. Then a one-layer conditional VAE (configs/default.toml
with ``model.conditional=true`` and a 2-dimensional latent, too small to hold the class as
well as the style, so the label has to carry it) on the same data gives
``conditional-class-grid.png`` and ``conditional-relabel.png``: one code under every label.
docs/gallery/hierarchical.json records the commands, the epochs, the wall times and the
test numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from gallery import GALLERY, ROOT, short_dataset, small_png, vaelab

PICTURES = ("layer-samples", "class-grid", "kl-per-layer", "relabel")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--k", type=int, default=50, help="importance samples at the end")
    args = parser.parse_args(argv)
    data = short_dataset(ROOT / "runs" / "gallery" / "mnist-short.npz")
    out = ROOT / "runs" / "gallery" / "hierarchical"
    settings = [f"data.name='{data.relative_to(ROOT)}'", "data.train_split=train",
                "data.valid_split=valid", "model.conditional=true",
                f"train.epochs={args.epochs}", "train.time_limit_minutes=0",
                "train.threads=1", "objective.warmup_epochs=3", f"eval.iw_samples={args.k}"]
    start = time.time()
    vaelab("train", "-c", "configs/hierarchical.toml", "--out", str(out.relative_to(ROOT)),
           "--overwrite", "--no-progress", *[a for s in settings for a in ("-s", s)])
    seconds = time.time() - start
    GALLERY.mkdir(parents=True, exist_ok=True)
    for name in PICTURES:
        small_png(out / f"{name}.png", GALLERY / f"hierarchical-{name}.png")
    test = json.loads((out / "summary.json").read_text())["test"]
    record = {
        "command": "python benchmarks/hierarchical_gallery.py " + " ".join(argv or sys.argv[1:]),
        "config": "configs/hierarchical.toml", "settings": settings,
        "pictures": [f"hierarchical-{name}.png" for name in PICTURES],
        "wall_seconds": round(seconds, 1),
        "test_log_likelihood_of": test.get("log_likelihood_of"),
        "test_nll": round(test["nll"], 2) if "nll" in test else None,
        "iw_samples": test.get("iw_samples"),
        "kl_per_layer": test.get("kl_per_layer"),
        "active_units_per_layer": test.get("active_units_per_layer"),
        "run": str(out.relative_to(ROOT)),
    }
    record["conditional"] = conditional_run(data, args)
    (GALLERY / "hierarchical.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


def conditional_run(data, args: argparse.Namespace) -> dict:
    """The one-layer conditional VAE with a small latent: its class grid and relabel pictures."""
    out = ROOT / "runs" / "gallery" / "conditional"
    settings = [f"data.name='{data.relative_to(ROOT)}'", "data.train_split=train",
                "data.valid_split=valid", "model.conditional=true", "model.latent_dim=2",
                f"train.epochs={args.epochs}", "train.time_limit_minutes=0",
                "train.threads=1", f"eval.iw_samples={args.k}"]
    start = time.time()
    vaelab("train", "-c", "configs/default.toml", "--out", str(out.relative_to(ROOT)),
           "--overwrite", "--no-progress", *[a for s in settings for a in ("-s", s)])
    seconds = time.time() - start
    for name in ("class-grid", "relabel"):
        small_png(out / f"{name}.png", GALLERY / f"conditional-{name}.png")
    test = json.loads((out / "summary.json").read_text())["test"]
    return {"config": "configs/default.toml", "settings": settings,
            "pictures": ["conditional-class-grid.png", "conditional-relabel.png"],
            "wall_seconds": round(seconds, 1),
            "test_log_likelihood_of": test.get("log_likelihood_of"),
            "test_nll": round(test["nll"], 2) if "nll" in test else None,
            "run": str(out.relative_to(ROOT))}


if __name__ == "__main__":
    sys.exit(main())
