"""``vaelab estimators RUN|CONFIG``: gradient variance, bias, SNR and cost per estimator.

At fixed parameters (a trained run, or a fresh model built from a config) and on one fixed
batch, draw M gradient estimates per estimator and compare them with a many-draw reference
gradient. Writes estimators.md, estimators.json and estimators.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only
    from vaelab.config import Config
    from vaelab.models.vae import VAE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "estimators", help="compare gradient estimators: variance, bias, SNR, time",
        description="Draw M gradient estimates per estimator at fixed parameters on one "
                    "fixed batch; report tr Cov (total, encoder, decoder), bias against a "
                    "many-draw reference gradient, SNR and time per estimate.")
    p.add_argument("target", help="a run folder (its trained model) or a TOML config "
                                  "(a freshly initialised model)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config key (CONFIG only)")
    p.add_argument("--estimators", help="comma list, e.g. pathwise,score-function (default: "
                                        "every estimator that fits the latent family)")
    p.add_argument("--baselines", default="none,moving-average,nvil,leave-one-out",
                   help="score-function baselines to compare (comma list)")
    p.add_argument("--draws", "-m", type=int, default=100,
                   help="gradient estimates per estimator (default 100)")
    p.add_argument("--reference-draws", type=int, default=None,
                   help="draws of the reference gradient (default max(5 x draws, 500))")
    p.add_argument("--batch", "-b", type=int, default=100, help="datapoints in the batch")
    p.add_argument("--samples", "-k", type=int, default=None,
                   help="K samples of z per datapoint (default: the config's)")
    p.add_argument("--temperature", type=float, default=None,
                   help="relaxation temperature for gumbel-softmax/straight-through "
                        "(default: the config's objective.temperature)")
    p.add_argument("--split", default="train", help="split the batch comes from")
    p.add_argument("--baseline-steps", type=int, default=300,
                   help="steps fitting each baseline at fixed model parameters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--out", "-o", help="folder for the table and plot (default: "
                                       "RUN/estimators, or runs/estimators-<config name>)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def load_target(target: str, overrides: list[str],
                checkpoint: str) -> tuple[Config, VAE, Path]:
    """(config, model, default out folder) from a run folder or a config file."""
    from vaelab.api import load_run
    from vaelab.build import build_model, validate
    from vaelab.config import load_config
    from vaelab.data.storage import training_rows
    from vaelab.training.matmul import resolve_matmul

    path = Path(target)
    if path.is_dir():
        if overrides:
            raise ValueError("--set applies to a CONFIG; a run is measured with its own config")
        run_ = load_run(path, checkpoint=checkpoint)
        return run_.config, run_.model, path / "estimators"
    config = validate(load_config(path, overrides))
    torch_seed(config.train.seed)
    train = training_rows(config, config.data.train_split)  # as training stores it
    model = build_model(config.model, train.event_shape, data_mean=train.statistics().mean,
                        data_x=train)
    config = resolve_matmul(config, model, rows=config.train.batch_size,
                            samples=config.objective.samples)  # as vaelab.fit does
    return config, model, Path("runs") / f"estimators-{path.stem}"


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vaelab.data.prepare import load_split, prepare_eval_x
    from vaelab.evaluation.estimator_comparison import (
        compare_estimators,
        markdown_table,
        variants,
    )
    from vaelab.inference.baselines import BASELINES
    from vaelab.inference.estimators import ESTIMATORS
    from vaelab.schedules import Progress

    if args.draws < 2:
        raise ValueError(f"--draws must be at least 2 to estimate a variance, got {args.draws}")
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    estimators, baselines = _split_list(args.estimators), _split_list(args.baselines)
    for name in estimators or []:
        if name not in ESTIMATORS:
            raise ValueError(f"--estimators: '{name}' is not known; choose from "
                             f"{', '.join(ESTIMATORS)}")
    for name in baselines or []:
        if name not in BASELINES:
            raise ValueError(f"--baselines: '{name}' is not known; choose from "
                             f"{', '.join(BASELINES)}")
    config, model, default_out = load_target(args.target, args.overrides, args.checkpoint)
    discrete = bool(model.posterior.discrete)
    if "pathwise" in (estimators or []) and discrete:
        raise ValueError("--estimators: pathwise needs a reparameterizable q(z|x), but "
                         f"model.latent={config.model.latent} is discrete; use "
                         "score-function, gumbel-softmax or straight-through")
    base = replace(config.objective, samples=args.samples or config.objective.samples)
    if args.temperature is not None:
        base = replace(base, temperature=args.temperature, temperature_rate=0.0)
    data = load_split(config, args.split)
    x = prepare_eval_x(config, data)[: args.batch]
    variant_list = variants(discrete, base.samples, estimators, baselines)
    progress = Progress(step=0, epoch=float(config.train.epochs))  # after any KL warm-up
    start = time.perf_counter()
    log = (lambda _: None) if args.json else (lambda m: print(f"  measuring {m}", flush=True))
    result = compare_estimators(
        model, base, x, variant_list, draws=args.draws,
        reference_draws=args.reference_draws or max(5 * args.draws, 500),
        baseline_steps=args.baseline_steps, progress=progress, seed=args.seed, log=log)
    result["setup"] = {
        "target": str(args.target), "latent": config.model.latent,
        "objective": base.name, "kl": base.kl, "batch": int(x.shape[0]),
        "split": args.split, "draws": args.draws, "seed": args.seed,
        "temperature": base.temperature, "seconds": round(time.perf_counter() - start, 1),
        "gradient": "of the training loss (negative bound, mean over the batch)"}
    out = Path(args.out) if args.out else default_out
    files = write_outputs(result, out)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(markdown_table(result["rows"]))
    ref = result["reference"]
    print(f"reference: {ref['estimator']} (K={ref['samples']}, {ref['draws']} draws); "
          "relative bias = |E g - E g_ref| / |E g_ref| from independent groups of draws, "
          "shown when above 3 standard errors")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    from vaelab.evaluation.estimator_comparison import markdown_table
    from vaelab.training.runs import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    setup = result.get("setup", {})
    md = (f"# Gradient estimators at fixed parameters\n\n"
          f"{setup.get('target', '')}: {setup.get('latent', '')} latents, "
          f"{setup.get('objective', '')} (KL {setup.get('kl', '')}), batch "
          f"{setup.get('batch', '')} from {setup.get('split', '')}, "
          f"{setup.get('draws', '')} draws per estimator.\n\n"
          + markdown_table(result["rows"]) + "\n")
    paths = [out / "estimators.md", out / "estimators.json", out / "estimators.png"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], json.dumps(result, indent=2) + "\n")
    plot_bars(result["rows"], paths[2])
    return paths


def plot_bars(rows: list[dict[str, Any]], path: Path) -> Path:
    """Encoder / decoder gradient variance (log scale) and encoder SNR per estimator."""
    import numpy as np

    from vaelab.viz.plots import plt, save_figure

    labels = [f"{r['estimator']}\nK={r['samples']}" for r in rows]
    pos = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 4), 4.2))
    for offset, group in ((-0.2, "encoder"), (0.2, "decoder")):
        ax1.bar(pos + offset, [r[f"variance_{group}"] for r in rows], width=0.4, label=group)
    ax1.set_yscale("log")
    ax1.set_ylabel("tr Cov[gradient]")
    ax1.set_title("gradient variance (lower is better)")
    ax1.legend()
    ax2.bar(pos, [r["snr_encoder"] for r in rows], width=0.6, color="tab:green")
    ax2.set_ylabel("median over coordinates of |E g| / std g")
    ax2.set_title("encoder signal-to-noise (higher is better)")
    for ax in (ax1, ax2):
        ax.set_xticks(pos, labels, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save_figure(fig, path)
