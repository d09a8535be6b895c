"""The report reads as tables, its pictures agree with its numbers, and the explorer takes a
client that went away in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import vaelab
from tiny import make_npz, tiny_config
from vaelab.viz import figures, plots
from vaelab.viz.report import render_report


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return vaelab.fit(tiny_config(make_npz(root / "data.npz", n=160), "model.latent_dim=3"),
                      out=root / "run")


def test_the_audit_is_a_table_and_the_raw_json_comes_last_folded(run):
    page = render_report(run.path)
    audit = json.loads((run.path / "summary.json").read_text())["objective_audit"]
    assert "{&#x27;" not in page and "{'" not in page  # no Python dict printed
    assert "<td class=k>likelihood</td><td>bernoulli</td>" in page
    assert f"<td>{audit['output_range']['status']}: " in page
    details = page.index("<details>")
    assert page.index("<img") < details and page.index("Metrics per epoch") < details
    assert page.rstrip().endswith("</details></body></html>")


def longest_white_run(path) -> int:
    pixels = np.asarray(Image.open(path).convert("L"))
    white = (pixels > 250).all(axis=1)
    best = current = 0
    for row_is_white in white:
        current = current + 1 if row_is_white else 0
        best = max(best, current)
    return best


def test_reconstructions_fill_their_picture(run):
    path = run.path / "reconstructions.png"
    height = np.asarray(Image.open(path)).shape[0]
    # a 2 x 16 grid of 8x8 images is ~105 px high at 8 inches wide: no band of blank rows
    # (the old layout padded it to 200 px with ~45 blank rows above and below)
    assert height < 160 and longest_white_run(path) < 20


def test_the_kl_picture_totals_the_evaluations_points(run, monkeypatch, tmp_path):
    seen = {}

    def capture(values, stderr, kind, path, unit="dimension", over=""):
        seen.update(total=float(values.sum()), over=over, kind=kind)
        return path

    monkeypatch.setattr(plots, "plot_kl_per_dimension", capture)
    figures.render(run, ["kl"], tmp_path)
    report = run.evaluate("test", iw_samples=0)
    assert seen["kind"] == "exact" and seen["over"] == f"{report['n']} test points"
    assert seen["total"] == pytest.approx(report["kl"], rel=1e-5, abs=1e-6)
    assert seen["total"] == pytest.approx(sum(report["kl_per_dim"]), abs=1e-4)


def test_a_client_that_went_away_is_one_log_line(run, caplog, capsys):
    from vaelab.viz.explorer import Explorer, LoadedModel, make_server

    server = make_server(Explorer([LoadedModel("r", run, points=8)]))
    try:
        with caplog.at_level("INFO", logger="vaelab"):
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                server.handle_error(None, ("127.0.0.1", 5555))
    finally:
        server.server_close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["explorer: client 127.0.0.1 went away (BrokenPipeError: Broken pipe)"]
    assert "Traceback" not in capsys.readouterr().err
