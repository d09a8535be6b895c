"""``vaelab explore RUN``: the latent explorer, a local web app on 127.0.0.1."""

from __future__ import annotations

import argparse
from typing import cast


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explore", help="explore a run's latent space in the browser",
                       description="Serve a local web page that shows the encoded test points "
                                   "and decodes the point under the pointer live. Binds to "
                                   "127.0.0.1 only unless --host says otherwise.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folder(s) written by `vaelab train` (the page can switch)")
    p.add_argument("--port", "-p", type=int, default=8765, help="port (default 8765; 0 = any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--points", type=int, default=1000, help="test points shown (default 1000)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where the models run (default: each run's train.device)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import webbrowser
    from pathlib import Path

    from vaelab.api import load_run
    from vaelab.viz.explorer import Explorer, LoadedModel, make_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.points < 2:
        raise ValueError(f"--points must be at least 2, got {args.points}")
    models, names = [], set()
    for path in args.runs:
        name = Path(path).resolve().name
        while name in names:
            name += "'"
        names.add(name)
        run_ = load_run(path, checkpoint=args.checkpoint, device=args.device)
        models.append(LoadedModel(name, run_, points=args.points))
    server = make_server(Explorer(models), args.host, args.port)
    server.verbose = getattr(args, "verbose", False)  # the global --verbose: every request
    host, port = cast(tuple[str, int], server.server_address[:2])  # an AF_INET(6) server
    shown = "127.0.0.1" if host in ("127.0.0.1", "0.0.0.0") else host
    url = f"http://{shown}:{port}/"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this explorer")
    print(f"vaelab explorer: {url}  (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("explorer stopped")
    finally:
        server.server_close()
    return 0
