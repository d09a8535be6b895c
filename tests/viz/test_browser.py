"""The explorer page and the HTML report in a real headless Chromium (Debian's, driven by
Playwright; nothing downloads a browser). Screenshots go to test-artifacts/.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is missing;
CI installs both (apt: chromium; pip: playwright).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from vaelab.viz.explorer import Explorer, LoadedModel, make_server, serve_in_thread
from vaelab.viz.report import write_report
from viz_runs import tiny_run

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VAELAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 20_000


def _skip_reason() -> str | None:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return (f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium` "
                "(or set VAELAB_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install playwright"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, timeout=TIMEOUT_MS,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = [LoadedModel("gauss2d", tiny_run(tmp_path_factory, "gaussian", "image",
                                            latent_dim=2), points=40),
            LoadedModel("gauss3d", tiny_run(tmp_path_factory, "gaussian", "image"), points=40),
            LoadedModel("cat", tiny_run(tmp_path_factory, "categorical", "image"), points=40)]
    srv = make_server(Explorer(runs), "127.0.0.1", 0, request_timeout=5.0)
    thread = serve_in_thread(srv)
    host, port = srv.server_address[:2]
    srv.url = f"http://{host}:{port}/"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def page(browser, server):
    """A fresh page that records console errors and every URL it requests."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors, page.requests = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    yield page
    context.close()


def wait_until(page, expression: str, timeout: float = TIMEOUT_MS / 1000) -> None:
    """Poll a JavaScript expression from Python (page.evaluate is not subject to the page's
    Content-Security-Policy, which forbids the eval that wait_for_function would need)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def decodes(page) -> int:
    return int(page.evaluate("document.body.dataset.decodes || '0'"))


def move_and_wait(page, x: float, y: float) -> str:
    """Move the pointer to canvas pixel (x, y); wait for that decode; return the image."""
    before = decodes(page)
    box = page.locator("#latent").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    wait_until(page, f"Number(document.body.dataset.decodes || 0) > {before}")
    wait_until(page, "!document.querySelector('#status').classList.contains('error')")
    return page.get_attribute("#decoded", "src")


def open_run(page, server, run: str) -> None:
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    if run != "gauss2d":
        before = decodes(page)
        page.select_option("#run-select", run)
        wait_until(page, f"Number(document.body.dataset.decodes || 0) > {before}")


def test_explorer_decodes_under_the_pointer_and_shows_interpolation(page, server):
    ARTIFACTS.mkdir(exist_ok=True)
    open_run(page, server, "gauss2d")
    assert page.title() == "vaelab explorer"
    assert "gaussian latent (2)" in page.inner_text("#summary")
    first = page.get_attribute("#decoded", "src")
    assert first.startswith("data:image/png;base64,")
    corner = move_and_wait(page, 40, 40)  # far from the origin: z near (-3, 3)
    other = move_and_wait(page, 480, 480)  # the opposite corner
    assert corner != first and other != corner
    assert page.inner_text("#coords").startswith("z = [")
    assert page.is_hidden("#strip-box")
    box = page.locator("#latent").bounding_box()
    page.mouse.click(box["x"] + 100, box["y"] + 260)
    assert page.is_hidden("#strip-box")
    page.mouse.click(box["x"] + 420, box["y"] + 260)
    page.wait_for_selector("#strip-box:not([hidden])")
    wait_until(page, "document.querySelector('#strip').naturalWidth > 0")
    width = page.evaluate("document.querySelector('#strip').naturalWidth")
    assert width == 10 * 8 + 9  # the default 10 steps of 8-pixel images, 1-pixel gaps
    assert page.is_hidden("#sliders")  # two dimensions need no sliders
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
    assert not page.errors, page.errors
    assert all(url.startswith(server.url) or url.startswith("data:") for url in page.requests)


def test_sliders_for_more_than_two_dimensions(page, server):
    open_run(page, server, "gauss3d")
    assert page.is_visible("#sliders")
    assert page.locator("#sliders input[type=range]").count() == 3
    before_src = page.get_attribute("#decoded", "src")
    before = decodes(page)
    page.locator("#sliders input[data-dim='2']").evaluate(
        "el => { el.value = String(Number(el.max) - 0.01); "
        "el.dispatchEvent(new Event('input')); }")
    wait_until(page, f"Number(document.body.dataset.decodes || 0) > {before}")
    assert page.get_attribute("#decoded", "src") != before_src
    page.screenshot(path=str(ARTIFACTS / "explorer-sliders.png"), full_page=True)
    assert not page.errors, page.errors


def test_class_pickers_for_categorical_latents(page, server):
    open_run(page, server, "cat")
    assert page.is_visible("#pickers") and page.is_hidden("#sliders")
    assert page.locator("#pickers select").count() == 3
    assert page.locator("#mode option[value=slerp]").is_disabled()
    seen = {page.get_attribute("#decoded", "src")}
    for value in ("0", "1", "2"):
        before = decodes(page)
        select = page.locator("#pickers select[data-var='0']")
        if select.input_value() == value:
            continue
        select.select_option(value)
        wait_until(page, f"Number(document.body.dataset.decodes || 0) > {before}")
        seen.add(page.get_attribute("#decoded", "src"))
    assert len(seen) >= 2  # choosing another class changes the picture
    page.screenshot(path=str(ARTIFACTS / "explorer-categorical.png"), full_page=True)
    assert not page.errors, page.errors


def test_report_opens_with_every_picture(page, tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    from vaelab.viz.figures import TRAIN_KINDS, render

    run = tiny_run(tmp_path_factory, "gaussian", "image")
    figures = [f for f in render(run, TRAIN_KINDS) if f.path is not None]
    report = write_report(run.path)
    page.goto(report.resolve().as_uri())
    page.wait_for_load_state("load")
    images = page.locator("figure img")
    assert images.count() >= len(figures) >= 7
    widths = page.evaluate("[...document.querySelectorAll('figure img')].map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths  # every embedded picture decodes
    assert "Metrics per epoch" in page.inner_text("body")
    assert "Evaluation JSON" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert all(url.startswith("file://") or url.startswith("data:") for url in page.requests)
    assert not page.errors, page.errors
