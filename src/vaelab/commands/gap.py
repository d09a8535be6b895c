"""``vaelab gap RUN``: the amortization and approximation gaps (Cremer et al. 2018)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gap", help="amortization and approximation gaps: encoder vs per-datapoint BBVI",
        description="For a test subset: the amortized ELBO, the ELBO after black-box VI "
                    "started from the encoder's output, and the IS log-likelihood; hence the "
                    "amortization gap (optimised - amortized ELBO) and the approximation gap "
                    "(log-likelihood - optimised ELBO). Writes gap.json and gap.png.")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("--n", type=int, default=1000, help="datapoints, the first n of the split "
                   "(default 1000)")
    p.add_argument("--split", default="test", help="split to use (default test)")
    p.add_argument("--steps", type=int, default=500, help="BBVI steps (default 500)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--lr-final", type=float, default=0.001,
                   help="learning rate at the last step, cosine schedule (default 0.001)")
    p.add_argument("--samples", type=int, default=None,
                   help="z samples per datapoint in each BBVI gradient (default 1; 8 for "
                        "discrete latents, whose score-function gradient needs K >= 2)")
    p.add_argument("--eval-samples", type=int, default=100,
                   help="z samples per datapoint for the reported ELBOs (default 100)")
    p.add_argument("--iw-samples", "-k", type=int, default=1000,
                   help="importance samples for log p(x) (default 1000; 0 skips it)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="datapoints optimised at once (memory only; default 500)")
    p.add_argument("--no-prior", action="store_true",
                   help="skip BBVI from the prior (the steps-saved comparison)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo draws")
    p.add_argument("--out", help="folder for gap.json and gap.png (default: the run folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vaelab.api import load_run
    from vaelab.evaluation import gaps
    from vaelab.inference.refine import check_table_family
    from vaelab.training.runs import RunDir
    from vaelab.viz.gap_plot import plot_gap

    for name in ("n", "steps", "samples", "eval_samples", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(args, name)}")
    if args.iw_samples < 0:
        raise ValueError(f"--iw-samples must be >= 0, got {args.iw_samples}")
    if args.lr <= 0 or args.lr_final <= 0:
        raise ValueError("--lr and --lr-final must be positive")
    run_ = load_run(args.run, checkpoint=args.checkpoint)
    check_table_family(run_.model.posterior)  # fail before loading data
    x = run_.data(args.split)
    if args.n > x.shape[0]:
        raise ValueError(f"--n {args.n} is larger than the {args.split} split "
                         f"({x.shape[0]} datapoints); pass --n {x.shape[0]} or less")
    torch.manual_seed(args.seed)
    report = gaps.measure(run_.model, x[:args.n], steps=args.steps, lr=args.lr,
                          lr_final=args.lr_final, samples=args.samples,
                          eval_samples=args.eval_samples, iw_samples=args.iw_samples,
                          batch_size=args.batch_size, from_prior=not args.no_prior,
                          progress=not args.json)
    report = {"run": str(run_.path), "split": args.split, "checkpoint": args.checkpoint,
              "seed": args.seed, "binarization": run_.binarization_note(), **report}
    out = RunDir(Path(args.out) if args.out else run_.path)
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("gap.json", report)
    picture = plot_gap(report, out.path / "gap.png")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_report(report))
    print(f"wrote {out.path / 'gap.json'} and {picture}")
    return 0


def format_report(r: dict) -> str:
    def line(label: str, key: str) -> str:
        s = r[key]
        return f"{label:<28}{s['mean']:10.3f} ± {s['stderr']:.3f} nats"

    lines = [f"{r['split']}: first {r['n']} datapoints; BBVI {r['settings']['steps']} steps, "
             f"lr {r['settings']['lr']} -> {r['settings']['lr_final']}",
             line("amortized ELBO", "amortized_elbo"),
             line("optimised ELBO (refined)", "optimised_elbo")]
    if "optimised_from_prior_elbo" in r:
        lines.append(line("  BBVI from the prior", "optimised_from_prior_elbo"))
    if "log_likelihood" in r:
        lines.append(line(f"log p(x) (IS, K={r['settings']['iw_samples']})", "log_likelihood"))
    lines.append(line("amortization gap", "amortization_gap"))
    if "approximation_gap" in r:
        lines.append(line("approximation gap", "approximation_gap"))
    reach = r["steps_to_reach"]
    for init in ("encoder", "prior"):
        if init in reach:
            got = reach[init]
            lines.append(f"steps from the {init:<8} to the amortized ELBO: "
                         f"{got['amortized_elbo']}, to 90% of the gap: "
                         f"{got['ninety_percent_gap']}")
    mono = r["monotone_from_encoder"]
    lines.append(f"refinement monotone within noise: {mono['monotone_within_noise']} "
                 f"(largest drop {mono['largest_drop']:.3f} ± {mono['drop_stderr']:.3f} over "
                 f"{mono['block']}-step blocks)")
    return "\n".join(lines)
