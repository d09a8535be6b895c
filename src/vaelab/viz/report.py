"""A self-contained HTML report of a run: one file to open, mail or archive.

``report.html`` holds the config, the headline test numbers, the per-epoch metrics table,
every picture in the run folder (embedded as base64 ``data:`` URIs) and the evaluation JSON.
It has no scripts and a Content-Security-Policy that forbids loading anything else, so it
renders the same offline and cannot reach the network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from vaelab.training.runs import RunDir, atomic_write_text
from vaelab.viz.catalog import CAPTIONS, FILENAMES, PICTURES
from vaelab.viz.summary_rows import audit_rows, test_rows

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}
METRIC_ORDER = ["epoch", "step", "train_bound", "val_bound", "train_rec", "val_rec", "train_kl",
                "val_kl", "lr", "train_seconds", "images_per_sec"]
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f7; } td.k, th.k { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; } .muted { color: #777; }
pre { background: #f5f5f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.scroll { max-height: 420px; overflow: auto; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.6g}"
    return str(value)


def picture_files(run_path: Path) -> list[Path]:
    """Pictures in the run folder: the known kinds in a fixed order, then any others."""
    known = [run_path / FILENAMES[k] for k in PICTURES]
    found = [p for p in known if p.is_file()]
    others = sorted(p for p in run_path.iterdir()
                    if p.suffix.lower() in MIME and p.is_file() and p not in known)
    return found + others


def data_uri(path: Path) -> str:
    mime = MIME[path.suffix.lower()]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's first table: the test numbers, then how the run trained."""
    rows = test_rows(summary)
    for key, label in (("epochs", "epochs"), ("steps", "steps"),
                       ("train_seconds", "training seconds"),
                       ("images_per_sec", "images per second"),
                       ("stop_reason", "stopped because"), ("checkpoint", "checkpoint")):
        if summary.get(key) is not None:
            rows.append((label, _fmt(summary[key])))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td class=k>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def metrics_table(history: list[dict[str, Any]]) -> str:
    if not history:
        return "<p class=muted>no per-epoch metrics recorded</p>"
    keys = [k for k in METRIC_ORDER if any(k in r for r in history)]
    keys += sorted({k for r in history for k in r} - set(keys) - {"wall_time"})
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(r.get(k)))}</td>" for k in keys) + "</tr>"
                   for r in history)
    return f"<div class=scroll><table><tr>{head}</tr>{rows}</table></div>"


def render_report(run_path: str | Path) -> str:
    """The report's HTML for the run folder at ``run_path``."""
    run_dir = RunDir.existing(run_path)
    path = run_dir.path
    summary = run_dir.read_json("summary.json") if run_dir.summary_path.is_file() else {}
    meta = run_dir.read_json("meta.json") if run_dir.meta_path.is_file() else {}
    config_text = run_dir.config_path.read_text()
    config = run_dir.read_config()
    history = run_dir.read_metrics()
    title = f"vaelab run {path.resolve().name}"
    model = config.model
    subtitle = (f"{meta.get('dataset', config.data.name)} · {model.latent} latent "
                f"(dim {model.latent_dim}) · {model.encoder}/{model.decoder} networks · "
                f"{model.likelihood} likelihood · {config.objective.name} objective")
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta http-equiv=Content-Security-Policy content=\"{CSP}\">"
             f"<meta name=viewport content='width=device-width, initial-scale=1'>"
             f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_esc(title)}</h1><p class=muted>{_esc(subtitle)}<br>"
             f"report written {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))} from "
             f"<code>{_esc(path)}</code></p>"]
    parts.append("<h2 id=summary>Summary</h2>")
    if summary:
        parts.append(_table(headline_rows(summary)))
        if summary.get("test_note"):
            parts.append(f"<p class=muted>note: {_esc(summary['test_note'])}</p>")
        audit = summary.get("objective_audit") or {}
        if audit:
            parts.append("<h3>How to read the numbers: the objective audit</h3>"
                         + _table(audit_rows(audit)))
    else:
        parts.append("<p class=muted>no summary.json: training has not finished</p>")
    parts.append("<h2 id=pictures>Pictures</h2>")
    pictures = picture_files(path)
    for pic in pictures:
        caption = CAPTIONS.get(pic.name, pic.name)
        parts.append(f"<figure><img alt='{_esc(pic.name)}' src='{data_uri(pic)}'>"
                     f"<figcaption>{_esc(caption)} <span class=muted>({_esc(pic.name)})"
                     f"</span></figcaption></figure>")
    if not pictures:
        parts.append("<p class=muted>no pictures in the run folder; draw them with "
                     "<code>vaelab plot RUN</code></p>")
    skipped = summary.get("pictures_skipped") or {}
    if skipped:
        parts.append("<p class=muted>not drawn:</p>"
                     + _table([(k, v) for k, v in skipped.items()]))
    parts.append("<h2 id=metrics>Metrics per epoch</h2>" + metrics_table(history))
    parts.append(f"<h2 id=config>Config</h2><pre>{_esc(config_text)}</pre>")
    if meta:
        parts.append("<h2 id=meta>Run facts</h2>"
                     + _table([(k, _fmt(v) if not isinstance(v, list | dict) else
                                json.dumps(v)) for k, v in meta.items()]))
    # the raw summary last and folded: the tables above are what a reader reads
    parts.append("<h2 id=evaluation>Evaluation JSON (the raw summary.json)</h2><details>"
                 "<summary>show the JSON (every number above, unrounded)</summary>"
                 f"<pre>{_esc(json.dumps(summary, indent=2)) if summary else 'none'}</pre>"
                 "</details>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(run_path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for the run folder; returns its path."""
    target = Path(out) if out is not None else Path(run_path) / "report.html"
    atomic_write_text(target, render_report(run_path))
    return target
