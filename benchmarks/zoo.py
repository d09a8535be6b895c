"""Training speed of every shipped config against a plain PyTorch loop of the same model.

    python benchmarks/zoo.py                     # every row, 3 alternating runs per side
    python benchmarks/zoo.py --quick             # 1 run per side, fewer steps (smoke test)
    python benchmarks/zoo.py --only 002_conv,default --repeats 5

For each config in ``configs/`` and ``configs/seeds/``:
1. images/s of vaelab's trainer (``vaelab.fit`` after ``keep_freed_memory()``, as the
   ``vaelab`` command runs it; the config as shipped except: 2 threads,
   no validation, test evaluation or pictures, ``data.train_limit`` = steps x batch, no
   ``train.init_from``) against a plain loop of *the same model* written here with plain
   ``torch.nn`` modules: the same networks (shapes checked, weights copied from vaelab's
   initialisation), batch size, Adam (torch's default implementation), binarization
   (``torch.bernoulli`` per batch), number of samples K, objective and estimator; the data
   as one tensor, one ``randperm`` per epoch and tensor slices, BCE-with-logits, the KL in
   closed form where vaelab uses one. Each side runs in a fresh process; the sides
   alternate ``--repeats`` times; the table gives medians. Each run trains ``epochs``
   epochs of ``steps`` steps and reports its fastest epoch after the first (warm-up), the
   same rule for both sides.
2. the importance-sampled log-likelihood's time at the config's shipped K
   (``eval.iw_samples``) and at K=5000, measured on a subset of the test images with the
   shipped evaluation chunks and extrapolated linearly to the 10k test images (the cost
   is per image and per sample: no fixed part worth the name).
Rows whose data is not on this machine (CIFAR-10 unless fetched) are skipped with the
reason. Writes benchmarks/results/zoo.json (``zoo-quick.json`` with --quick) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
LOG_2PI = math.log(2 * math.pi)
MIN_SCALE = 1e-5  # vaelab's floor on Gaussian scales (latents.positive)
STEPS = 100  # steps per epoch (--quick: 40); heavy rows fewer, see steps_for
HEAVY = {"paper-iwae50": 4, "paper-vamp": 2}  # divide the steps: K=50, 500 pseudo-inputs


def config_paths() -> list[Path]:
    return sorted((ROOT / "configs").glob("*.toml")) + \
        sorted((ROOT / "configs" / "seeds").glob("*.toml"))


def row_name(path: Path) -> str:
    return path.stem


def steps_for(name: str, quick: bool) -> int:
    return max(10, (40 if quick else STEPS) // HEAVY.get(name, 1))


def bench_config(path: Path, steps: int, epochs: int):
    """The shipped config with the benchmark's conditions (see the module docstring)."""
    from vaelab.config import load_config

    cfg = load_config(path)
    cfg.train.threads = torch.get_num_threads()
    cfg.train.epochs = epochs
    cfg.train.progress = False
    cfg.train.init_from = ""  # speed does not depend on the starting weights
    cfg.train.time_limit_minutes = 0.0
    cfg.train.snapshot_every = 0
    cfg.train.checkpoint_every_steps = 0
    cfg.data.valid_split = ""
    cfg.data.test_split = ""
    cfg.data.train_limit = steps * cfg.train.batch_size
    return cfg


def skip_reason(path: Path) -> str:
    """Why a row cannot run here ('' when it can)."""
    from vaelab.config import load_config
    from vaelab.data import dataset_status

    cfg = load_config(path)
    if len(cfg.model.latent_layers) > 1 or cfg.model.conditional:
        return "hierarchical and conditional models have their own plain twin: " \
               "`python benchmarks/hierarchical_speed.py`"
    status = {s.name: s for s in dataset_status(data_dir=cfg.data.data_dir or None)}
    if cfg.data.name in status and not status[cfg.data.name].available:
        return f"{cfg.data.name} is not on this machine and the benchmark runs offline " \
               f"(`{status[cfg.data.name].fetch_command}` downloads it)"
    return ""


# -- the plain PyTorch side -------------------------------------------------------------

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus,
        "gelu": nn.GELU, "silu": nn.SiLU}


def plain_mlp(sizes: list[int], act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers)


class PlainConvEncoder(nn.Module):
    def __init__(self, c: int, h: int, w: int, channels: list[int], hidden: list[int],
                 out: int, act: str):
        super().__init__()
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), ACTS[act]()]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = plain_mlp([c * h * w, *hidden, out], act)

    def forward(self, x):  # (B, C, H, W) -> (B, out)
        return self.head(self.conv(x).flatten(1))


class PlainConvDecoder(nn.Module):
    def __init__(self, zdim: int, channels: list[int], c: int, h: int, w: int,
                 hidden: list[int], act: str):
        super().__init__()
        self.hw = (h, w)
        sizes = [(h, w)]
        for _ in channels:
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        rev = list(reversed(channels))
        self.start = (rev[0], *sizes[-1])
        self.head = plain_mlp([zdim, *hidden, math.prod(self.start)], act)
        self.act = ACTS[act]()
        layers: list[nn.Module] = []
        outs = [*rev[1:], c]
        for i, (cin, cout) in enumerate(zip(rev, outs, strict=True)):
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1,
                                             output_padding=1))
            if i < len(rev) - 1:
                layers.append(ACTS[act]())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z):  # (N, zdim) -> (N, C, H, W) logits
        feats = self.act(self.head(z)).view(-1, *self.start)
        return self.deconv(feats)[..., : self.hw[0], : self.hw[1]]


def copy_weights(plain: nn.Module, ours: nn.Module) -> None:
    """vaelab's initial weights into the plain module: same tensors in the same order."""
    mine, theirs = list(plain.parameters()), list(ours.parameters())
    shapes = [tuple(p.shape) for p in mine], [tuple(p.shape) for p in theirs]
    if shapes[0] != shapes[1]:
        raise SystemExit(f"the plain networks differ from vaelab's: {shapes}")
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            a.copy_(b)


class PlainVAE(nn.Module):
    """The config's model in plain torch: encoder, decoder and trainable prior parameters;
    ``loss(x, beta, tau)`` is the config's training loss on a binarized batch."""

    def __init__(self, cfg, event_shape: tuple[int, ...], ours):
        super().__init__()
        m, o = cfg.model, cfg.objective
        self.m, self.o = m, o
        self.event_shape = event_shape
        d = m.latent_dim
        self.d = d
        self.nc = m.num_classes
        params = {"gaussian": 2 * d, "gaussian-full": d + d * (d + 1) // 2,
                  "categorical": d * m.num_classes, "bernoulli": d}[m.latent]
        flat_z = d * m.num_classes if m.latent == "categorical" else d
        enc_hidden = m.encoder_hidden or m.hidden
        if m.encoder == "mlp":
            self.encoder = plain_mlp([math.prod(event_shape), *enc_hidden, params],
                                     m.activation)
        else:
            self.encoder = PlainConvEncoder(*event_shape, m.channels, enc_hidden, params,
                                            m.activation)
        if m.decoder == "mlp":
            self.decoder = plain_mlp([flat_z, *m.hidden[::-1], math.prod(event_shape)],
                                     m.activation)
        else:
            self.decoder = PlainConvDecoder(flat_z, m.channels, *event_shape, m.hidden[::-1],
                                            m.activation)
        copy_weights(self.encoder, ours.encoder)
        copy_weights(self.decoder, ours.decoder)
        prior = ours.prior_module
        self.prior_kind = m.prior if m.prior != "auto" else \
            ("uniform" if m.latent in ("categorical", "bernoulli") else "normal")
        if self.prior_kind == "mixture":
            self.mix_logits = nn.Parameter(prior.logits.detach().clone())
            self.mix_loc = nn.Parameter(prior.loc.detach().clone())
            self.mix_raw = nn.Parameter(prior.raw_scale.detach().clone())
        elif self.prior_kind == "vamp":
            self.pseudo = nn.Parameter(prior.pseudo_inputs.detach().clone())
        if m.latent == "gaussian-full":
            rows, cols = torch.tril_indices(d, d)
            self.register_buffer("rows", rows)
            self.register_buffer("cols", cols)
            self.register_buffer("diag", rows == cols)
        self.estimator = o.estimator if o.estimator != "auto" else \
            ("gumbel-softmax" if m.latent in ("categorical", "bernoulli") else "pathwise")

    def encode(self, x):
        return self.encoder(x.flatten(1) if self.m.encoder == "mlp" else x)

    def decode(self, z):  # z (K, B, flat) -> logits (K, B, D)
        k, b = z.shape[:2]
        out = self.decoder(z.reshape(k * b, -1))
        return out.reshape(k, b, -1)

    # Gaussian posteriors: (z (K, B, d), log q(z) (K, B) or None, analytic KL to N(0, I))
    def gaussian(self, h, k: int, need_log_q: bool):
        d = self.d
        mu, raw = h[:, :d], h[:, d:]
        eps = torch.randn(k, *mu.shape)
        if self.m.latent == "gaussian":
            s = F.softplus(raw) + MIN_SCALE
            z = mu + s * eps
            log_det = s.log().sum(-1)
            kl = 0.5 * (mu.pow(2) + s.pow(2) - 1).sum(-1) - log_det
        else:  # full covariance: L lower-triangular with a softplus diagonal
            tril = torch.where(self.diag, F.softplus(raw) + MIN_SCALE, raw)
            L = h.new_zeros(h.shape[0], d, d)
            L[:, self.rows, self.cols] = tril
            z = mu + torch.einsum("bij,kbj->kbi", L, eps)
            log_det = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            kl = 0.5 * (L.pow(2).sum((-2, -1)) + mu.pow(2).sum(-1) - d) - log_det
        log_q = (-0.5 * eps.pow(2).sum(-1) - log_det - 0.5 * d * LOG_2PI) if need_log_q \
            else None
        return z, log_q, kl

    def log_prior(self, z):  # (K, B, d) -> (K, B)
        if self.prior_kind == "normal":
            return -0.5 * z.pow(2).sum(-1) - 0.5 * self.d * LOG_2PI
        if self.prior_kind == "mixture":
            loc, scale = self.mix_loc, F.softplus(self.mix_raw) + MIN_SCALE
            log_w = torch.log_softmax(self.mix_logits, 0)
        else:  # vamp: the encoder's q at the pseudo-inputs, equal weights
            hp = self.encode(self.pseudo)
            loc, scale = hp[:, :self.d], F.softplus(hp[:, self.d:]) + MIN_SCALE
            log_w = torch.full((loc.shape[0],), -math.log(loc.shape[0]))
        diff = (z.unsqueeze(-2) - loc) / scale  # (K, B, C, d)
        comp = -0.5 * diff.pow(2).sum(-1) - scale.log().sum(-1) - 0.5 * self.d * LOG_2PI
        return torch.logsumexp(comp + log_w, -1)

    def log_px(self, logits, x):  # logits (K, B, D), x (B, D) -> (K, B)
        return -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)

    def loss(self, x, beta: float, tau: float):
        o, m = self.o, self.m
        k = o.samples
        h = self.encode(x)
        xf = x.flatten(1)
        if m.latent in ("gaussian", "gaussian-full"):
            mc = o.name == "iwae" or self.prior_kind != "normal" or o.kl == "mc"
            z, log_q, kl = self.gaussian(h, k, need_log_q=mc)
            log_px = self.log_px(self.decode(z), xf)
            if o.name == "iwae":
                log_w = log_px + beta * (self.log_prior(z) - log_q)
                return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()
            if mc:
                return -(log_px - beta * (log_q - self.log_prior(z))).mean()
            return -(log_px.mean(0) - beta * kl).mean()
        if m.latent == "categorical":  # uniform prior, analytic KL of the discrete model
            logits = h.view(h.shape[0], self.d, self.nc)
            log_q = torch.log_softmax(logits, -1)
            kl = (log_q.exp() * (log_q + math.log(self.nc))).sum((-2, -1))
            g = -torch.empty(k, *logits.shape).exponential_().log()
            soft = torch.softmax((log_q + g) / tau, -1)
            if self.estimator == "straight-through":
                hard = F.one_hot(soft.argmax(-1), self.nc).to(soft.dtype)
                soft = hard + (soft - soft.detach())
            log_px = self.log_px(self.decode(soft.flatten(2)), xf)
            return -(log_px.mean(0) - beta * kl).mean()
        # Bernoulli latents, uniform prior, analytic KL
        p = torch.sigmoid(h)
        log_p, log_1p = F.logsigmoid(h), F.logsigmoid(-h)
        kl = (p * log_p + (1 - p) * log_1p + math.log(2)).sum(-1)
        if self.estimator == "gumbel-softmax":
            u = torch.rand(k, *h.shape)
            z = torch.sigmoid((h + u.log() - (-u).log1p()) / tau)
            log_px = self.log_px(self.decode(z), xf)
            return -(log_px.mean(0) - beta * kl).mean()
        # score function with the leave-one-out baseline (K >= 2)
        with torch.no_grad():
            z = torch.bernoulli(p.expand(k, *p.shape))
        log_px = self.log_px(self.decode(z), xf)  # (K, B)
        log_qz = (z * log_p + (1 - z) * log_1p).sum(-1)
        f = log_px.detach()
        centred = f - (f.sum(0, keepdim=True) - f) / (k - 1)
        surrogate = log_px + centred * (log_qz - log_qz.detach())
        return -(surrogate.mean(0) - beta * kl).mean()


def plain_training(cfg, x: torch.Tensor, model: PlainVAE, epochs: int) -> list[float]:
    """images/s of each epoch of the plain loop (tensor slices, torch.bernoulli, Adam)."""
    o, t = cfg.objective, cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    dynamic = cfg.model.likelihood == "bernoulli" and cfg.data.binarize == "dynamic"
    n, bsz = x.shape[0], t.batch_size
    steps_per_epoch = math.ceil(n / bsz)
    step, rates = 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(steps_per_epoch):
            xb = x[perm[i * bsz:(i + 1) * bsz]]
            if dynamic:
                xb = torch.bernoulli(xb)
            frac = epoch + i / steps_per_epoch
            beta = o.beta * min(1.0, frac / o.warmup_epochs) if o.warmup_epochs > 0 else o.beta
            tau = max(o.temperature_min, o.temperature * math.exp(
                -o.temperature_rate * (step // o.temperature_every * o.temperature_every)))
            loss = model.loss(xb, beta, tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        rates.append(n / (time.perf_counter() - start))
    return rates


# -- one side, in a fresh process -------------------------------------------------------

def measure_plain(path: Path, steps: int, epochs: int) -> dict:
    from vaelab.build import build_model
    from vaelab.data.prepare import limit_rows, load_split

    cfg = bench_config(path, steps, epochs)
    torch.manual_seed(cfg.train.seed)
    train = limit_rows(load_split(cfg, cfg.data.train_split), cfg.data.train_limit)
    x = train.x.float().contiguous()
    ours = build_model(cfg.model, train.event_shape, data_mean=x.mean(0), data_x=x)
    model = PlainVAE(cfg, tuple(train.event_shape), ours)
    rates = plain_training(cfg, x, model, epochs)
    return {"images_per_sec": max(rates[1:]), "epoch_rates": [round(r) for r in rates]}


def measure_vaelab(path: Path, steps: int, epochs: int, eval_images: int, ks: list[int]
                   ) -> dict:
    from vaelab.api import fit
    from vaelab.data.prepare import load_split, prepare_eval_x
    from vaelab.evaluation.evaluate import importance_log_likelihood
    from vaelab.training.heap import keep_freed_memory

    keep_freed_memory()  # as the `vaelab` command does (vaelab.fit alone leaves malloc alone)
    cfg = bench_config(path, steps, epochs)
    shipped_k = cfg.eval.iw_samples
    with tempfile.TemporaryDirectory() as tmp:
        run = fit(cfg, out=Path(tmp) / "run", overwrite=True, pictures=False)
        history = [json.loads(line) for line in
                   (run.path / "metrics.jsonl").read_text().splitlines()]
        step = json.loads((run.path / "summary.json").read_text())["training_step"]
    rates = [r["images_per_sec"] for r in history]
    out: dict = {"images_per_sec": max(rates[1:]), "epoch_rates": [round(r) for r in rates],
                 "training_step": step}
    if eval_images:
        test = load_split(cfg, "test")
        xt = prepare_eval_x(cfg, test)[:eval_images]
        model = run.model.eval()
        evals = {}
        for k in sorted({shipped_k, *ks}):
            start = time.perf_counter()
            importance_log_likelihood(model, xt, samples=k, batch_size=cfg.eval.batch_size,
                                      sample_chunk=cfg.eval.sample_chunk)
            seconds = time.perf_counter() - start
            evals[str(k)] = {"images": eval_images, "seconds": round(seconds, 2),
                             "seconds_10k": round(seconds * 10_000 / eval_images, 1)}
        out["is_eval"] = evals
        out["shipped_k"] = shipped_k
    return out


def child(args: argparse.Namespace) -> list[str]:
    base = [sys.executable, __file__, "--threads", str(torch.get_num_threads())]
    return base + (["--quick"] if args.quick else [])


def in_fresh_process(args: argparse.Namespace, part: str, path: Path, eval_images: int = 0
                     ) -> dict:
    command = [*child(args), "--part", part, "--config", str(path),
               "--eval-images", str(eval_images)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{part} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_row(args: argparse.Namespace, path: Path) -> dict:
    name = row_name(path)
    reason = skip_reason(path)
    if reason:
        return {"config": str(path.relative_to(ROOT)), "skipped": reason}
    plain, ours, evals = [], [], {}
    eval_images = 0 if args.no_eval else (10 if args.quick else args.eval_images)
    for r in range(args.repeats):  # alternate, each run in a fresh process
        plain.append(in_fresh_process(args, "plain", path)["images_per_sec"])
        info = in_fresh_process(args, "vaelab", path, eval_images if r == 0 else 0)
        ours.append(info["images_per_sec"])
        if r == 0:
            evals = {k: info[k] for k in ("is_eval", "shipped_k", "training_step")
                     if k in info}
    a, b = statistics.median(plain), statistics.median(ours)
    row = {"config": str(path.relative_to(ROOT)), "steps_per_epoch": steps_for(name, args.quick),
           "plain_images_per_sec": round(a), "vaelab_images_per_sec": round(b),
           "speedup": round(b / a, 2), "plain_runs": [round(v) for v in plain],
           "vaelab_runs": [round(v) for v in ours], **evals}
    print(f"{name}: plain {a:,.0f}, vaelab {b:,.0f} images/s = {b / a:.2f}x", file=sys.stderr)
    return row


def gemm_diagnostic(rows: list[dict]) -> dict | None:
    """The default model's GEMM rate in training (its products' FLOPs x vaelab's images/s)
    as a fraction of the best float32 GEMM rate measured now (throughput.py's measure)."""
    from throughput import peak_gemm_gflops, training_gemm_flops_per_image

    row = next((r for r in rows if r["config"] == "configs/default.toml" and "speedup" in r),
               None)
    if row is None:
        return None
    flops = training_gemm_flops_per_image([(784, 512), (512, 40), (20, 512), (512, 784)])
    achieved = flops * row["vaelab_images_per_sec"] / 1e9
    peaks = peak_gemm_gflops()
    return {"gemm_gflops": round(achieved, 1),
            "peak_gemm_gflops": {k: round(v, 1) for k, v in peaks.items()},
            "fraction_of_peak": round(achieved / max(peaks.values()), 3)}


def table(rows: list[dict]) -> str:
    lines = ["| config | vaelab's step | plain loop, images/s | vaelab, images/s | speed-up | "
             "IS at shipped K, 10k test images | IS at K=5000, 10k |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        name = f"`{r['config']}`"
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        ev = r.get("is_eval", {})
        k = r.get("shipped_k")
        shipped = f"K={k}: {ev[str(k)]['seconds_10k']:.0f} s" if k and str(k) in ev else ""
        k5 = f"{ev['5000']['seconds_10k']:.0f} s" if "5000" in ev else ""
        step = "fused" if r.get("training_step", "").startswith("fused") else "general"
        lines.append(f"| {name} | {step} | {r['plain_images_per_sec']:,} | "
                     f"{r['vaelab_images_per_sec']:,} | **{r['speedup']:.2f}x** | {shipped} | "
                     f"{k5} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run per side, fewer steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=0, help="runs per side (3; quick 1)")
    parser.add_argument("--only", default="", help="comma-separated config stems")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    parser.add_argument("--eval-images", type=int, default=20,
                        help="test images the IS timing runs on (extrapolated to 10k)")
    parser.add_argument("--no-eval", action="store_true", help="skip the IS timings")
    parser.add_argument("--table", action="store_true",
                        help="only print the table of the results file, measure nothing")
    parser.add_argument("--part", choices=["plain", "vaelab"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help="results file (default results/zoo.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.epochs = max(2, args.epochs)
    if args.part:  # a child measuring one side of one row
        path = Path(args.config)
        steps = steps_for(row_name(path), args.quick)
        epochs = 2 if args.quick else args.epochs
        if args.part == "plain":
            result = measure_plain(path, steps, epochs)
        else:
            result = measure_vaelab(path, steps, epochs, args.eval_images, [5000])
        print(json.dumps(result))
        return
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.table:
        out = Path(args.out) if args.out else \
            RESULTS / f"zoo{'-quick' if args.quick else ''}.json"
        print(table(json.loads(out.read_text())["rows"]))
        return
    only = {s for s in args.only.split(",") if s}
    paths = [p for p in config_paths() if not only or row_name(p) in only]
    started = time.time()
    load = os.getloadavg()
    out = Path(args.out) if args.out else RESULTS / f"zoo{'-quick' if args.quick else ''}.json"
    old = json.loads(out.read_text())["rows"] if out.is_file() and only else []
    order = [str(p.relative_to(ROOT)) for p in config_paths()]
    rows: list[dict] = []
    result: dict = {"rows": old}
    for path in paths:  # the file is rewritten after each row: a cut-short run keeps its rows
        row = run_row(args, path)
        row.update(threads=args.threads, repeats=args.repeats, quick=args.quick,
                   load_average_after=[round(v, 2) for v in os.getloadavg()],
                   measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        rows.append(row)
        done = {r["config"] for r in rows}  # --only: keep the file's other rows
        merged = sorted([*rows, *(r for r in old if r["config"] not in done)],
                        key=lambda r: order.index(r["config"]) if r["config"] in order else 999)
        result = {"torch": torch.__version__, "python": platform.python_version(),
                  "load_average_at_start": [round(v, 2) for v in load],
                  "minutes": round((time.time() - started) / 60, 1), "rows": merged}
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    result["default_model_gemm_rate"] = gemm_diagnostic(result["rows"])
    out.write_text(json.dumps(result, indent=2) + "\n")
    rows = result["rows"]
    print(table(rows))


if __name__ == "__main__":
    main()
