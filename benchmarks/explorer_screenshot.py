"""The explorer screenshot of the docs (docs/gallery/explorer.png), made in a real browser.

Serves a trained run with the explorer on 127.0.0.1, opens it in headless Chromium (Debian's
binary, driven by Playwright: nothing downloads a browser), clicks two points A and B, moves
the pointer over a third, and saves the page::

    python benchmarks/gallery.py --short --only 001          # the run it shows
    python benchmarks/explorer_screenshot.py runs/gallery/001
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vaelab.api import load_run  # noqa: E402
from vaelab.viz.explorer import Explorer, LoadedModel, make_server, serve_in_thread  # noqa: E402

CHROMIUM = os.environ.get("VAELAB_CHROMIUM", "/usr/bin/chromium")


def screenshot(run_path: Path, out: Path, points: int) -> Path:
    from playwright.sync_api import sync_playwright

    run = load_run(run_path)
    server = make_server(Explorer([LoadedModel(run_path.name, run, points=points)]),
                         "127.0.0.1", 0, request_timeout=10.0)
    thread = serve_in_thread(server)
    host, port = server.server_address[:2]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1180, "height": 760})
            page.goto(f"http://{host}:{port}/")
            page.wait_for_selector("body[data-ready='1']")
            box = page.locator("#latent").bounding_box()
            page.mouse.click(box["x"] + 150, box["y"] + 200)  # A
            page.mouse.click(box["x"] + 400, box["y"] + 330)  # B
            page.wait_for_selector("#strip-box:not([hidden])")
            page.mouse.move(box["x"] + 300, box["y"] + 180)
            page.wait_for_function("document.querySelector('#strip').naturalWidth > 0")
            page.wait_for_timeout(500)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder, e.g. runs/gallery/001")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery" / "explorer.png")
    parser.add_argument("--points", type=int, default=1000, help="test points shown")
    args = parser.parse_args(argv)
    print(screenshot(args.run, args.out, args.points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
