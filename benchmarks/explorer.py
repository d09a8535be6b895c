"""Explorer decode latency over HTTP on loopback: the time from sending POST /api/decode to
having the PNG data URI, for the default model (784-512-20 MLP, Bernoulli decoder).

    python benchmarks/explorer.py                 # trains the default model for 1 epoch first
    python benchmarks/explorer.py --run runs/X    # an existing run
    python benchmarks/explorer.py --requests 1000 --threads 1

Latency does not depend on how long the model trained, so one epoch is enough. Reports the
median, p95 and max per request over one kept-alive connection (how a browser talks to
it), the same with a new connection per request, and the model-only decode time the server
measures. Writes benchmarks/results/explorer.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 3),
            "p95_ms": round(percentile(values, 0.95), 3),
            "max_ms": round(max(values), 3), "n": len(values)}


def measure(host: str, port: int, latents: list[list[float]], *, keep_alive: bool):
    """Per-request wall times (ms) and the server's decode_ms for each request."""
    times, decode = [], []
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for z in latents:
        if not keep_alive:
            conn = http.client.HTTPConnection(host, port, timeout=30)
        body = json.dumps({"z": z})
        start = time.perf_counter()
        conn.request("POST", "/api/decode", body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
        times.append(1000 * (time.perf_counter() - start))
        if response.status != 200:
            raise RuntimeError(f"decode failed: {response.status} {payload}")
        decode.append(payload["decode_ms"])
        if not keep_alive:
            conn.close()
    conn.close()
    return times, decode


def default_run(workdir: Path) -> Path:
    import vaelab

    config = vaelab.load_config(overrides=["train.epochs=1", "eval.iw_samples=0",
                                           "train.progress=false"])
    out = workdir / "default-1epoch"
    vaelab.fit(config, out=out, pictures=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder (default: train the default model 1 epoch)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", default=str(RESULTS / "explorer.json"))
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from vaelab.api import load_run
    from vaelab.viz.explorer import Explorer, LoadedModel, make_server, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        run_path = Path(args.run) if args.run else default_run(Path(tmp))
        run = load_run(run_path)
        model = LoadedModel(run_path.name, run)
        server = make_server(Explorer([model]), "127.0.0.1", 0)
        serve_in_thread(server)
        host, port = server.server_address[:2]
        gen = torch.Generator().manual_seed(0)
        dim = model.flat_dim
        latents = torch.randn(args.requests, dim, generator=gen).clamp(-4, 4).tolist()
        measure(host, port, latents[:20], keep_alive=True)  # warm-up
        kept, decode = measure(host, port, latents, keep_alive=True)
        fresh, _ = measure(host, port, latents[: max(50, args.requests // 5)],
                           keep_alive=False)
        server.shutdown()
        server.server_close()

    result = {
        "run": str(run_path) if args.run else "default config, 1 epoch (vaelab.load_config())",
        "model": f"{run.config.model.encoder}/{run.config.model.decoder} "
                 f"hidden {run.config.model.hidden}, {run.config.model.latent} "
                 f"latent_dim {run.config.model.latent_dim}, event {run.meta['event_shape']}",
        "keep_alive": summary(kept),
        "new_connection": summary(fresh),
        "server_decode_only": summary(decode),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "command": "python benchmarks/explorer.py " + " ".join(argv or sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key in ("keep_alive", "new_connection", "server_decode_only"):
        s = result[key]
        print(f"{key:20s} median {s['median_ms']:7.2f} ms  p95 {s['p95_ms']:7.2f} ms  "
              f"max {s['max_ms']:7.2f} ms  (n={s['n']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
