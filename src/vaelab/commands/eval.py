"""``vaelab eval RUN``: ELBO, importance-sampled log-likelihood, KL and active units."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run: ELBO, IS log-likelihood, active units")
    p.add_argument("run", help="run folder written by `vaelab train`")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--iw-samples", "-k", type=int, default=None,
                   help="importance samples K for log p(x) (default: the run's eval.iw_samples;"
                        " 0 skips it)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N points")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaelab.api import load_run

    if args.iw_samples is not None and args.iw_samples < 0:
        raise ValueError(f"--iw-samples must be >= 0, got {args.iw_samples}")
    run_ = load_run(args.run, checkpoint=args.checkpoint)
    report = run_.evaluate(args.split, iw_samples=args.iw_samples, progress=not args.json,
                           limit=args.limit)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.split}: {report['n']} datapoints ({report['binarization']})")
    print(f"ELBO   {report['elbo']:9.3f} ± {report['elbo_stderr']:.3f} nats")
    print(f"  rec  {report['rec']:9.3f}   KL {report['kl']:.3f}")
    if "nll" in report:
        print(f"NLL    {report['nll']:9.3f} ± {report['log_likelihood_stderr']:.3f} nats "
              f"(K={report['iw_samples']})")
    print(f"active units {report['active_units']}/{report['latent_units']}")
    if "bits_per_dim" in report:
        print(f"bits/dim {report['bits_per_dim']:.4f}")
    if report.get("kl_per_dim") is not None:
        kls = " ".join(f"{v:.2f}" for v in report["kl_per_dim"])
        print(f"KL per dimension ({report['kl_per_dim_kind']}): {kls}")
    for warning in report.get("warnings", []):
        print(f"WARNING: {warning}")
    return 0
