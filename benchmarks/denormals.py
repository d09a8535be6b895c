"""Does training slow down as subnormal floats appear? Where are they? Epoch rates as
shipped, without clearing Adam's negligible moments, and with flush-to-zero.

    python benchmarks/denormals.py --config default --epochs 12     # results/denormals-default.json
    python benchmarks/denormals.py --epochs 12 --threads 1 --tag loaded  # -default-loaded.json
    python benchmarks/denormals.py --epochs 12 --threads 2 --tag 2threads-a  # and -b

Trains the config (no validation or IS evaluation, as the `vaelab` command runs it after
``keep_freed_memory()``) in a fresh process three times: as shipped; with
``training/moments.py``'s pass switched off (what vaelab did before it: Adam's first moment
decays into the subnormal range wherever a gradient is exactly zero); and as shipped under
``torch.set_flush_denormal(True)`` (x86 FTZ/DAZ: subnormal results and operands become 0, the
bound on what any subnormal can cost). Prints each epoch's images/s. A rate that falls epoch
by epoch only without flushing means subnormal values reached the step's kernels (x86
handles them through slow microcode assists). vaelab does not flush by default: that is
process-wide and turns exp(-100) into 0.

After each unflushed run, a census of the subnormals at its end: in the weights and Adam's
moments (``checkpoints/last.pt``), and, for one training batch through the general path
(``train.fused=false``, the same numbers as the fused one), in every tensor autograd saves
for the backward pass (the step's intermediates, caught with
``torch.autograd.graph.saved_tensors_hooks``) and in the gradients; and the time of one
fused Adam step on the run's final state, as left and with its negligible moments cleared
(alternating, medians of 7 x 50 steps); and of a whole training step from that state, as
left, cleared, and flushed (alternating in one process, medians of 7 x 30 steps: the
side-by-side answer to what subnormals cost, which a noisy machine's epoch rates cannot
give).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


PARTS = {"shipped": "as shipped", "uncleared": "Adam's moments not cleared",
         "flush": "set_flush_denormal(True)"}


def train(config: str, epochs: int, threads: int, part: str) -> dict:
    import torch

    if part == "flush":
        torch.set_flush_denormal(True)
    from vaelab.api import fit
    from vaelab.config import load_config
    from vaelab.training import moments
    from vaelab.training.heap import keep_freed_memory

    if part == "uncleared":
        moments.EVERY = 2**62  # never

    keep_freed_memory()
    cfg = load_config(ROOT / "configs" / f"{config}.toml", [
        f"train.epochs={epochs}", f"train.threads={threads}", "train.progress=false",
        "eval.iw_samples=0", "data.valid_split=''", "train.time_limit_minutes=0"])
    with tempfile.TemporaryDirectory() as tmp:
        run = fit(cfg, out=Path(tmp) / "run", pictures=False)
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
        where = {} if part == "flush" else census(run.path, cfg)
    return {"images_per_sec": [round(json.loads(line)["images_per_sec"]) for line in lines],
            "subnormals": where}


def count_subnormal(t) -> int:
    import torch

    if not t.is_floating_point():
        return 0
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


def census(run_dir: Path, cfg) -> dict[str, list]:
    """{place: [[tensor, shape, subnormal values], ...]} at the end of the run in
    ``run_dir``: weights, Adam's moments, one step's saved intermediates and gradients."""
    import torch

    from vaelab.api import load_run
    from vaelab.build import build_objective
    from vaelab.schedules import Progress
    from vaelab.training.runs import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    run = load_run(run_dir, checkpoint="last")
    names = [n for n, _ in run.model.named_parameters()]
    found: dict[str, list] = {"weights": [], "adam": [], "intermediates": [], "gradients": []}

    def note(place: str, name: str, t) -> None:
        if n := count_subnormal(t):
            found[place].append([name, list(t.shape), n])

    for name, t in state["model"].items():
        note("weights", name, t)
    for i, adam_state in state["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            note("adam", f"{names[int(i)]}.{key}", adam_state[key])
    x = run.data("train")[:cfg.train.batch_size]
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))  # dynamic binarization
    objective = build_objective(cfg.objective, tuple(x.shape[1:]), fused=False)
    saved: list = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = objective(run.model, x, Progress(step=10**6, epoch=1e6))
    out.loss.backward()
    for j, t in enumerate(saved):
        note("intermediates", f"saved[{j}]", t)
    for name, p in run.model.named_parameters():
        if p.grad is not None:
            note("gradients", name, p.grad)
    return {**found, "adam_step_ms": adam_step_ms(run.model, state["optimizer"]),
            "training_step_ms": training_step_ms(run, cfg, state["optimizer"])}


def adam_step_ms(model, optimizer_state: dict) -> dict[str, float]:
    """Median ms of a fused Adam step from ``optimizer_state`` with the model's current
    gradients: as the run left it, and with its negligible moments cleared."""
    import copy
    import statistics
    import time

    import torch

    from vaelab.training.moments import zero_negligible_moments

    def optimizer(clear: bool):
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for p, q in zip(params, model.parameters(), strict=True):
            p.grad = q.grad.clone()
        opt = torch.optim.Adam(params, lr=1e-3, fused=True)
        opt.load_state_dict(copy.deepcopy(optimizer_state))
        if clear:
            zero_negligible_moments(opt)
        return opt

    times: dict[str, list[float]] = {"as left": [], "cleared": []}
    for _ in range(7):
        for key in times:
            opt = optimizer(key == "cleared")
            start = time.perf_counter()
            for _ in range(50):
                opt.step()
            times[key].append((time.perf_counter() - start) / 50 * 1e3)
    return {key: round(statistics.median(v), 3) for key, v in times.items()}


def training_step_ms(run, cfg, optimizer_state: dict) -> dict[str, float]:
    """Median ms of a whole fused training step (binarize, fused ELBO, backward, fused Adam)
    from the run's final state: as left, with its negligible moments cleared, and as left
    under ``set_flush_denormal(True)``, alternating in this one process (medians of 7 x 30
    steps), so a noisy machine's drift falls on all three alike."""
    import copy
    import statistics
    import time

    import torch

    from vaelab.build import build_objective
    from vaelab.schedules import Progress
    from vaelab.training.moments import zero_negligible_moments

    data = run.data("train")
    objective = build_objective(cfg.objective, tuple(data.shape[1:]))
    generator = torch.Generator().manual_seed(0)

    def steps(clear: bool, flush: bool, n: int = 30) -> float:
        model = copy.deepcopy(run.model).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
        opt.load_state_dict(copy.deepcopy(optimizer_state))
        if clear:
            zero_negligible_moments(opt)
        torch.set_flush_denormal(flush)
        try:
            start = time.perf_counter()
            for i in range(n):
                x = data[i * cfg.train.batch_size:(i + 1) * cfg.train.batch_size]
                x = torch.bernoulli(x, generator=generator)
                opt.zero_grad(set_to_none=True)
                objective(model, x, Progress(step=10**6 + i, epoch=1e6)).loss.backward()
                opt.step()
            return (time.perf_counter() - start) / n * 1e3
        finally:
            torch.set_flush_denormal(False)

    variants = {"as left": (False, False), "cleared": (True, False), "flushed": (False, True)}
    times: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(7):
        for key, (clear, flush) in variants.items():
            times[key].append(steps(clear, flush))
    return {key: round(statistics.median(v), 3) for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="a stem of configs/*.toml")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(train(args.config, args.epochs, args.threads, args.part)))
        return
    results = {}
    for part in PARTS:
        out = subprocess.run([sys.executable, __file__, "--config", args.config, "--epochs",
                              str(args.epochs), "--threads", str(args.threads), "--part", part],
                             check=True, capture_output=True, text=True).stdout
        results[part] = json.loads(out.splitlines()[-1])
        print(PARTS[part], results[part]["images_per_sec"], flush=True)
    for part in ("shipped", "uncleared"):
        found = results[part]["subnormals"]
        print(f"{PARTS[part]}: fused Adam step on the final state {found['adam_step_ms']} ms")
        print(f"  whole training step on the final state {found['training_step_ms']} ms")
        for place in ("weights", "adam", "intermediates", "gradients"):
            print(f"  subnormal values in {place}:", ", ".join(
                f"{n} in {name} {shape}" for name, shape, n in found[place]) or "none")
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / f"denormals-{args.config}{'-' + args.tag if args.tag else ''}.json"
    out_path.write_text(json.dumps({
        "command": f"python benchmarks/denormals.py --config {args.config} --epochs "
                   f"{args.epochs} --threads {args.threads}"
                   + (f" --tag {args.tag}" if args.tag else ""),
        "load_average_after": list(os.getloadavg()),
        "images_per_sec_by_epoch": {PARTS[p]: r["images_per_sec"] for p, r in results.items()},
        "at_the_end": {PARTS[p]: results[p]["subnormals"] for p in ("shipped", "uncleared")}},
        indent=2) + "\n")
    print(f"wrote {out_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
