"""Tiny trained runs for the picture, report and explorer tests, trained once per session.

Every latent family x {1-channel image, 3-channel image, tabular vector}; one epoch on 48
points, snapshots on, no importance sampling, so a run takes about a second.
"""

from __future__ import annotations

import vaelab
from tiny import make_npz, tiny_config

FAMILIES = ("gaussian", "gaussian-full", "categorical", "bernoulli")
SHAPES = {"image": (1, 8, 8), "rgb": (3, 8, 8), "tabular": (12,)}
CASES = [(f, s) for f in FAMILIES for s in ("image", "tabular")] + [
    ("gaussian", "rgb"), ("categorical", "rgb")]

_cache: dict[tuple, vaelab.Run] = {}


def tiny_run(factory, family: str = "gaussian", shape: str = "image", *extra: str,
             latent_dim: int = 3) -> vaelab.Run:
    """A trained tiny run (cached per session by its arguments); ``factory`` is pytest's
    ``tmp_path_factory``."""
    key = (family, shape, extra, latent_dim)
    if key not in _cache:
        root = factory.mktemp(f"run-{family}-{shape}")
        data = make_npz(root / "data.npz", shape=SHAPES[shape])
        config = tiny_config(data, f"model.latent={family}", f"model.latent_dim={latent_dim}",
                             "model.num_classes=3", "train.snapshot_every=1",
                             "eval.iw_samples=0", *extra)
        _cache[key] = vaelab.fit(config, out=root / "run", pictures=False)
    return _cache[key]


def serving(runs: dict, timeout: float = 1.0):
    """A fixture body: an explorer HTTP server on a free local port over ``runs``
    ({name: run}, 20 points each), yielded with ``.runs`` set, shut down afterwards."""
    from vaelab.viz.explorer import Explorer, LoadedModel, make_server, serve_in_thread

    explorer = Explorer([LoadedModel(name, run, points=20) for name, run in runs.items()])
    srv = make_server(explorer, "127.0.0.1", 0, request_timeout=timeout)
    thread = serve_in_thread(srv)
    srv.runs = runs
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)
