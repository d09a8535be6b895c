"""The seed gallery: train each seed system's config and put its pictures in docs/gallery/.

    python benchmarks/gallery.py              # full: each configs/seeds/*.toml as written
    python benchmarks/gallery.py --short      # minutes: a 5k/1k/1k MNIST subset, 3 epochs
    python benchmarks/gallery.py --only 001,003 --short

Runs go to runs/gallery/<seed>/ (each with its report.html); chosen pictures are copied to
docs/gallery/<seed>-<picture>.png (palette PNGs, small), the posterior animations are
re-drawn at low resolution, and docs/gallery/gallery.json records the mode, the commands and
the headline numbers. For seed 003 the gallery also draws the training curve against the one
the course notes report (converted to nats per image).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "configs" / "seeds"
GALLERY = ROOT / "docs" / "gallery"

# seed: (config, pictures copied to the gallery)
RUNS = {
    "000": ("000_categorical_gumbel.toml", ["scatter", "class-sweep", "samples"]),
    "001": ("001_gaussian_2d.toml", ["animation", "scatter", "prior-grid", "interpolation"]),
    "002": ("002_conv.toml", ["prior-grid", "samples", "reconstructions"]),
    "003": ("003_conv_encoder_10_epochs.toml", ["seed-curve", "samples", "reconstructions"]),
    "004": ("004_mog_fullcov.toml", ["scatter", "kl-per-dimension", "samples"]),
}
# seed 003's reported loss per epoch: sum over 938 batches of -ELBO / (64 * 784)
SEED_003_LOSS = [193.2767, 145.9898, 136.3119, 132.1799, 130.1328, 128.7921, 127.8008,
                 127.0921, 126.4143, 125.9678]
SEED_003_SCALE = 60000 / (64 * 784)  # reported number = SCALE x mean -ELBO per image


def short_dataset(path: Path) -> Path:
    """The first 5000 train, 1000 valid and 1000 test MNIST digits as uint8 (8-bit data)."""
    import numpy as np
    import torch

    from vaelab.data import load_dataset

    if path.is_file():
        return path
    arrays = {}
    for split, n in (("train", 5000), ("valid", 1000), ("test", 1000)):
        data = load_dataset("mnist", split)
        arrays[f"x_{split}"] = (data.x[:n] * 255).round().to(torch.uint8).numpy()
        arrays[f"y_{split}"] = data.y[:n].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def overrides(seed: str, args: argparse.Namespace, data: Path | None) -> list[str]:
    if not args.short:
        return []
    epochs = 10 if seed == "003" else args.epochs
    assert data is not None  # --short made it
    return [f"data.name='{data.relative_to(ROOT)}'", f"train.epochs={epochs}",
            f"eval.iw_samples={args.k}", "train.snapshot_points=1000"]


def vaelab(*argv: str) -> None:
    command = [sys.executable, "-m", "vaelab", *argv]
    print("$ vaelab " + " ".join(argv), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH":
                                                        str(ROOT / "src")})


def small_png(source: Path, target: Path) -> None:
    """Copy a picture as a 256-colour palette PNG (a fraction of the size, same look)."""
    from PIL import Image

    with Image.open(source) as img:
        img.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(
            target, optimize=True)


def seed_curve(run_path: Path, target: Path, short: bool) -> None:
    """Seed 003: our train -ELBO per epoch against the course notes' reported curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vaelab.training.runs import RunDir

    history = RunDir(run_path).read_metrics()
    ours = [-r["train_bound"] for r in history]
    notes = [v / SEED_003_SCALE for v in SEED_003_LOSS]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(range(1, len(notes) + 1), notes, "o--", label="seed 003 notes (converted)")
    ax.plot(range(1, len(ours) + 1), ours, "o-", label="vaelab, this config")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train -ELBO, nats per image")
    where = " (short mode: 5k images, not comparable)" if short else ""
    ax.set_title(f"conv-encoder VAE, grey-level MNIST{where}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)


def small_animation(run_path: Path, target: Path, max_frames: int = 12) -> None:
    """The posterior animation at low resolution with at most ``max_frames`` frames."""
    import torch

    from vaelab.models.latent_space import fit_projection
    from vaelab.viz.plots import plot_animation
    from vaelab.viz.snapshots import load_snapshots

    frames = load_snapshots(run_path)
    if len(frames) > max_frames:  # keep the early frames, where most of the change is
        keep = sorted({round((len(frames) - 1) * (i / (max_frames - 1)) ** 2)
                       for i in range(max_frames)})
        frames = [frames[i] for i in keep]
    projection = fit_projection(torch.as_tensor(frames[-1][1]))
    plot_animation(frames, target, projection, fps=2, dpi=45)


def run_seed(seed: str, args: argparse.Namespace, data: Path | None) -> dict:
    config, pictures = RUNS[seed]
    out = ROOT / "runs" / "gallery" / seed
    start = time.time()
    # paths relative to the repo root (the subprocess runs there), as the record shows them
    vaelab("train", "-c", str((SEEDS / config).relative_to(ROOT)), "--out",
           str(out.relative_to(ROOT)), "--overwrite",
           "--no-progress", *[a for o in overrides(seed, args, data) for a in ("-s", o)])
    seconds = time.time() - start
    GALLERY.mkdir(parents=True, exist_ok=True)
    written = []
    for name in pictures:
        if name == "animation":
            target = GALLERY / f"{seed}-animation.gif"
            small_animation(out, target)
        elif name == "seed-curve":
            target = GALLERY / f"{seed}-seed-curve.png"
            seed_curve(out, target, args.short)
        else:
            source = out / f"{name}.png"
            if not source.is_file():
                print(f"  {seed}: no {name}.png in {out}; skipped")
                continue
            target = GALLERY / f"{seed}-{name}.png"
            small_png(source, target)
        written.append(target.name)
    summary = json.loads((out / "summary.json").read_text())
    test = summary.get("test", {})
    return {"config": f"configs/seeds/{config}", "pictures": written,
            "epochs": summary["epochs"], "wall_seconds": round(seconds, 1),
            "test_elbo": round(test.get("elbo", float("nan")), 2),
            "test_nll": round(test["nll"], 2) if "nll" in test else None,
            "iw_samples": test.get("iw_samples"), "run": str(out.relative_to(ROOT))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the seed configs; draw the gallery.")
    parser.add_argument("--short", action="store_true",
                        help="5k/1k/1k MNIST subset, --epochs epochs (seed 003: 10), K=--k")
    parser.add_argument("--epochs", type=int, default=3, help="epochs in --short mode")
    parser.add_argument("--k", type=int, default=50, help="importance samples in --short mode")
    parser.add_argument("--only", default="", help="comma-separated seeds, e.g. 001,003")
    args = parser.parse_args(argv)
    seeds = [s for s in args.only.split(",") if s] or list(RUNS)
    unknown = [s for s in seeds if s not in RUNS]
    if unknown:
        parser.error(f"unknown seed {unknown[0]}; choose from {', '.join(RUNS)}")
    data = short_dataset(ROOT / "runs" / "gallery" / "mnist-short.npz") if args.short else None
    index_path = GALLERY / "gallery.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"seeds": {}}
    for seed in seeds:
        index["seeds"][seed] = run_seed(seed, args, data)
        index["seeds"][seed]["mode"] = "short" if args.short else "full"
        print(f"  {seed}: {index['seeds'][seed]}", flush=True)
    index["seeds"] = dict(sorted(index["seeds"].items()))
    index["command"] = "python benchmarks/gallery.py " + " ".join(argv or sys.argv[1:])
    index["short_mode"] = ("first 5000/1000/1000 MNIST train/valid/test digits, "
                           f"{args.epochs} epochs (seed 003: 10), K={args.k}")
    GALLERY.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    total = sum(p.stat().st_size for p in GALLERY.iterdir())
    print(f"gallery: {GALLERY} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
