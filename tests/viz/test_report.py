"""report.html: self-contained (every picture embedded, nothing fetched), complete (config,
numbers, metrics, evaluation JSON), escaped, and written by `vaelab train` and `vaelab report`.
(The browser test opens it in Chromium: tests/viz/test_browser.py.)"""

from __future__ import annotations

import base64
import html
import json
import re

import pytest

import vaelab
from tiny import make_npz, tiny_config
from vaelab.cli import main
from vaelab.viz.figures import TRAIN_KINDS, render
from vaelab.viz.report import render_report, write_report
from viz_runs import tiny_run


def embedded_images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r"src='data:image/(?:png|gif);base64,([A-Za-z0-9+/=]+)'", text)]


def test_report_embeds_every_picture_and_every_record(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "gaussian", "image")
    drawn = [f.path for f in render(run, TRAIN_KINDS) if f.path is not None]
    text = write_report(run.path).read_text()
    images = embedded_images(text)
    assert len(images) == len(drawn) >= 7
    assert sorted(images) == sorted(p.read_bytes() for p in drawn)  # byte-exact copies
    summary = json.loads((run.path / "summary.json").read_text())
    assert html.escape(json.dumps(summary, indent=2), quote=True) in text
    assert html.escape((run.path / "config.toml").read_text(), quote=True) in text
    assert f"{summary['test']['elbo']:.3f}" in text
    assert text.count("<tr><td>") == len(vaelab.training.runs.RunDir(run.path).read_metrics())
    # self-contained: a CSP forbidding any fetch, and no address outside the file
    assert "default-src 'none'; img-src data:" in text
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", text)
    assert "<script" not in text


def test_report_escapes_what_it_shows(tmp_path):
    folder = tmp_path / "<b>odd & name"
    folder.mkdir()
    data = make_npz(folder / "d.npz")
    run = vaelab.fit(tiny_config(data, "eval.iw_samples=0"), out=folder / "run", pictures=False)
    text = render_report(run.path)
    assert "<b>odd" not in text and "&lt;b&gt;odd &amp; name" in text


def test_report_of_an_unfinished_run(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory, "bernoulli", "tabular")
    copy = tmp_path / "unfinished"
    copy.mkdir()
    for name in ("config.toml", "meta.json", "metrics.jsonl"):
        (copy / name).write_bytes((run.path / name).read_bytes())
    text = render_report(copy)
    assert "training has not finished" in text and "no pictures" in text


def test_train_writes_the_report(tmp_path):
    data = make_npz(tmp_path / "d.npz")
    run = vaelab.fit(tiny_config(data, "eval.iw_samples=0"), out=tmp_path / "run")
    text = (run.path / "report.html").read_text()
    assert len(embedded_images(text)) == len(
        json.loads((run.path / "summary.json").read_text())["pictures"])


def test_report_command(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "categorical", "image")
    out = tmp_path / "r.html"
    assert main(["report", str(run.path), "--out", str(out)]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    assert (run.path / "class-sweep.png").is_file()  # missing pictures were drawn first
    assert len(embedded_images(out.read_text())) >= 7
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a vaelab run folder" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--no-draw", "--redraw"])
def test_report_command_flags(tmp_path_factory, tmp_path, flag):
    run = tiny_run(tmp_path_factory, "gaussian-full", "tabular")
    assert main(["report", str(run.path), "--out", str(tmp_path / "r.html"), flag]) == 0
