"""``vaelab eval RUN``: ELBO, importance-sampled log-likelihood, KL and active units."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="evaluate a run: ELBO, IS log-likelihood, active units")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--iw-samples", "-k", type=int, default=None,
                   help="importance samples K for log p(x) (default: the run's eval.iw_samples;"
                        " 0 skips it)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N points (default: the run's eval.limit)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the Monte Carlo draws (default: the run's eval.seed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where to evaluate (default: the run's train.device)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--matmul", choices=["recorded", "auto", "onednn", "torch"],
                   default="recorded",
                   help="GEMM library of the linear layers: the one the run recorded in "
                        "training (default), or auto to time both again on this machine")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the run's train.threads, so a run trained on "
                        "one core beside another job is evaluated the same way; 0 = all cores)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaelab.api import load_run

    if args.iw_samples is not None and args.iw_samples < 0:
        raise ValueError(f"--iw-samples must be >= 0, got {args.iw_samples}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be an integer >= 1 (the first N points "
                         "of the split); leave it out to evaluate the whole split")
    if args.threads is not None and args.threads < 0:
        raise ValueError(f"--threads {args.threads}: must be >= 0 (0 = all cores); leave it "
                         "out for the run's train.threads")
    run_ = load_run(args.run, checkpoint=args.checkpoint, device=args.device,
                    matmul=None if args.matmul == "recorded" else args.matmul,
                    threads="recorded" if args.threads is None else args.threads)
    report = run_.evaluate(args.split, iw_samples=args.iw_samples, limit=args.limit,
                           seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.split}: {report['n']} datapoints ({report['binarization']})")
    print("\n".join(report_lines(report, args.split)))
    if report.get("kl_per_dim") is not None:
        kls = " ".join(f"{v:.2f}" for v in report["kl_per_dim"])
        print(f"KL per dimension ({report['kl_per_dim_kind']}): {kls}")
    for warning in report.get("warnings", []):
        print(f"WARNING: {warning}")
    return 0


def report_lines(report: dict, split: str = "test") -> list[str]:
    """The headline numbers of an evaluation report (``vaelab eval``, end of ``train``)."""
    lines = [f"{split} ELBO: {report['elbo']:.2f} ± {report['elbo_stderr']:.2f} nats "
             f"(rec {report['rec']:.2f}, KL {report['kl']:.2f})"]
    if "nll" in report:
        lines.append(f"{split} NLL:  {report['nll']:.2f} ± {report['log_likelihood_stderr']:.2f}"
                     f" nats (importance sampling, K={report['iw_samples']})")
    lines.append(f"active units: {report['active_units']}/{report['latent_units']}")
    if "kl_per_layer" in report:  # hierarchical: bottom layer first
        lines.append("per layer (bottom first): KL " + ", ".join(
            f"{k:.2f}" for k in report["kl_per_layer"]) + "; active units " + ", ".join(
            f"{a}/{d}" for a, d in zip(report["active_units_per_layer"],
                                       report["latent_layers"], strict=True)))
    if "bits_per_dim" in report:
        lines.append(f"bits/dim:  {report['bits_per_dim']:.4f}")
    return lines
