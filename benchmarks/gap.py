"""Amortization and approximation gaps on MNIST, and mean-field EM vs amortized training.

Part 1 (Cremer et al. 2018): train the default model and one with a larger encoder (the
decoder unchanged), then run ``vaelab gap`` on the first n test points of each.
Part 2 (seeds 001/004): on a small training subset, train with mean-field variational EM
(one lambda per datapoint) and with the amortized encoder; compare their training ELBOs and
their test ELBOs (mean-field: BBVI from the prior on each test point; amortized: the
encoder, and the encoder refined by BBVI).

    python benchmarks/gap.py --out runs/bench-gap --part gaps        # full, part 1
    python benchmarks/gap.py --out runs/bench-gap --part subset      # full, part 2
    python benchmarks/gap.py --out runs/bench-gap-short --short      # a few minutes, smoke test

Numbers go to OUT/gap-benchmark.json and are printed as a table; docs/inference.md quotes
them with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FULL = {"epochs": 30, "n": 1000, "steps": 500, "iw": 1000,
        "subset": 1000, "mf_epochs": 50, "amortized_epochs": 50, "mf_test": 1000}
SHORT = {"epochs": 3, "n": 200, "steps": 200, "iw": 200,
         "subset": 500, "mf_epochs": 10, "amortized_epochs": 10, "mf_test": 200}
LARGER_ENCODER = "model.encoder_hidden=[1024, 1024]"
THREADS = [1]  # torch threads (set by --threads); 1 avoids OpenMP stalls on a shared machine


def train(out: Path, overrides: list[str], *, reuse: bool) -> tuple[Path, float]:
    from vaelab.api import fit
    from vaelab.config import load_config

    if reuse and (out / "summary.json").is_file():
        return out, json.loads((out / "summary.json").read_text())["train_seconds"]
    config = load_config(None, ["train.progress=false", f"train.threads={THREADS[0]}",
                                *overrides])
    start = time.perf_counter()
    fit(config, out=out, overwrite=True, pictures=False)
    return out, time.perf_counter() - start


def gap(run: Path, p: dict) -> tuple[dict, float]:
    from vaelab.cli import main

    start = time.perf_counter()
    code = main(["gap", str(run), "--n", str(p["n"]), "--steps", str(p["steps"]),
                 "--iw-samples", str(p["iw"]), "--json"])
    if code:
        raise SystemExit(f"vaelab gap failed on {run}")
    return json.loads((run / "gap.json").read_text()), time.perf_counter() - start


def subset_comparison(out: Path, p: dict, reuse: bool) -> dict:
    """Mean-field EM vs amortized training on the first p['subset'] training images."""
    import torch

    from vaelab.api import load_run
    from vaelab.evaluation.gaps import measure

    common = [f"data.train_limit={p['subset']}", "data.valid_split=''", "data.test_split=''"]
    result = {}
    for mode, epochs in (("mean-field", p["mf_epochs"]), ("amortized", p["amortized_epochs"])):
        run_dir, seconds = train(out / f"subset-{mode}",
                                 [*common, f"train.inference='{mode}'",
                                  f"train.epochs={epochs}"], reuse=reuse)
        run = load_run(run_dir, checkpoint="last")
        history = [json.loads(line) for line in
                   (run_dir / "metrics.jsonl").read_text().splitlines()]
        torch.manual_seed(0)
        start = time.perf_counter()
        if mode == "mean-field":  # q for test points: BBVI from the prior (eval.refine_steps)
            test = run.evaluate("test", iw_samples=p["iw"], limit=p["mf_test"])
            entry = {"test_elbo": test["elbo"], "test_elbo_stderr": test["elbo_stderr"],
                     "test_log_likelihood": test["log_likelihood"], "inference": test["inference"]}
        else:
            x = run.data("test")[:p["mf_test"]]
            report = measure(run.model, x, steps=p["steps"], iw_samples=p["iw"],
                             from_prior=False)
            entry = {"test_elbo": report["amortized_elbo"]["mean"],
                     "test_elbo_stderr": report["amortized_elbo"]["stderr"],
                     "test_refined_elbo": report["optimised_elbo"]["mean"],
                     "test_log_likelihood": report["log_likelihood"]["mean"]}
        entry.update({"train_elbo_last_epoch": history[-1]["train_bound"],
                      "epochs": len(history), "train_seconds": round(seconds, 1),
                      "eval_seconds": round(time.perf_counter() - start, 1),
                      "train_points": p["subset"], "test_points": p["mf_test"]})
        result[mode] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-gap", help="folder for runs and results")
    parser.add_argument("--short", action="store_true", help="a few-minute smoke version")
    parser.add_argument("--reuse", action="store_true", help="reuse trained runs in --out")
    parser.add_argument("--part", choices=["all", "gaps", "subset"], default="all",
                        help="run part 1 (gaps), part 2 (subset) or both (default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    import torch

    THREADS[0] = args.threads
    torch.set_num_threads(args.threads)
    p = SHORT if args.short else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gap-benchmark.json"
    results: dict = json.loads(path.read_text()) if path.is_file() else {}
    results.update({"settings": p, "short": args.short})
    results.setdefault("models", {})
    parts = ("gaps", "subset") if args.part == "all" else (args.part,)
    for name, extra in (("default", []), ("larger-encoder", [LARGER_ENCODER])):
        if "gaps" not in parts:
            break
        run, train_seconds = train(out / name, [f"train.epochs={p['epochs']}",
                                                "eval.iw_samples=0", *extra], reuse=args.reuse)
        report, gap_seconds = gap(run, p)
        results["models"][name] = {
            "overrides": extra, "train_seconds": round(train_seconds, 1),
            "gap_seconds": round(gap_seconds, 1),
            **{k: report[k] for k in ("amortized_elbo", "optimised_elbo", "log_likelihood",
                                      "amortization_gap", "approximation_gap",
                                      "steps_to_reach", "monotone_from_encoder")}}
    if "subset" in parts:
        results["subset"] = subset_comparison(out, p, args.reuse)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'model':<16}{'amortized':>11}{'optimised':>11}{'log p(x)':>10}"
          f"{'amort. gap':>15}{'approx. gap':>15}")
    for name, r in results["models"].items():
        print(f"{name:<16}{r['amortized_elbo']['mean']:11.2f}{r['optimised_elbo']['mean']:11.2f}"
              f"{r['log_likelihood']['mean']:10.2f}"
              f"{r['amortization_gap']['mean']:9.2f} ± {r['amortization_gap']['stderr']:.2f}"
              f"{r['approximation_gap']['mean']:9.2f} ± {r['approximation_gap']['stderr']:.2f}")
    for mode, r in results.get("subset", {}).items():
        print(f"{mode:<12} train ELBO {r['train_elbo_last_epoch']:.2f}, test ELBO "
              f"{r['test_elbo']:.2f} ± {r['test_elbo_stderr']:.2f}, log p(x) "
              f"{r['test_log_likelihood']:.2f} ({r['train_seconds']} s training)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
