"""``vaelab export``: a trained model as a folder to share, in the Hugging Face Hub's layout.

The folder holds only what ``vaelab.load_run`` needs and a person reads first::

    README.md          the model card: YAML metadata (library_name, tags, datasets), the
                       test numbers, the objective audit, a samples picture, how to load it
    config.toml        the resolved config
    meta.json          event shape, dataset, parameter count, vaelab's and torch's versions
    model.safetensors  the weights (no pickle: nothing runs when it is loaded)
    samples.png        samples from the prior

No checkpoints, optimizer state, pictures of training or metrics: a few MB instead of the
run folder's tens. ``huggingface_hub`` can push it as it is (``HfApi().upload_folder``) and
``load_run("hf://owner/name")`` pulls it back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaelab.config import Config
from vaelab.training.runs import RunDir, RunError, atomic_write_text
from vaelab.training.weights import EXPORT_FILES, WEIGHTS_FILE, save_safetensors, versions
from vaelab.viz.summary_rows import audit_rows, test_rows

if TYPE_CHECKING:  # annotations only: api.py sits above viz/
    from vaelab.api import Run


def markdown_cell(text: object) -> str:
    """``text`` as one Markdown table cell: ``|`` (as in p(x|y)) escaped, newlines joined."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    lines += [f"| {markdown_cell(k)} | {markdown_cell(v)} |" for k, v in rows]
    return "\n".join(lines)


def number_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The model card's numbers: the report's test rows (2 digits) and the test size."""
    rows = test_rows(summary, digits=2)
    test = summary.get("test") or {}
    if "n" in test:
        rows.append(("test points", str(test["n"])))
    return rows


def model_card(config: Config, meta: dict[str, Any], summary: dict[str, Any], name: str) -> str:
    """README.md of an exported model: Hub metadata, numbers, audit, picture, usage."""
    m, o = config.model, config.objective
    dataset = meta.get("dataset", config.data.name)
    front = ["---", "library_name: vaelab",
             "tags:", "  - vae", "  - variational-autoencoder", "  - pytorch", "  - vaelab",
             f"  - {m.latent}-latent"]
    if "/" not in dataset and "." not in dataset:  # a named dataset, not a local file
        front += ["datasets:", f"  - {dataset}"]
    front += ["---", ""]
    hidden = "-".join(str(h) for h in m.hidden) or "linear"
    shown = Path(dataset).name if "/" in dataset else dataset  # no local paths in a card
    body = [f"# {name}", "",
            f"A variational autoencoder trained with vaelab on {shown}: "
            f"{m.latent} latent of dimension {m.latent_dim}, {m.encoder}/{m.decoder} networks "
            f"(hidden {hidden}), {m.likelihood} likelihood, {o.name} objective "
            f"(K={o.samples}). {meta.get('parameters', '?')} parameters; trained "
            f"{summary.get('epochs', '?')} epochs in {summary.get('train_seconds', '?')} s.",
            "", "## Test numbers", "",
            "Nats per datapoint (log-densities summed over data elements, averaged over "
            "datapoints), ± one standard error.", ""]
    rows = number_rows(summary)
    body.append(_md_table(rows, ("measure", "value")) if rows else "Not evaluated.")
    if summary.get("test_note"):
        body += ["", f"Note: {summary['test_note']}."]
    audit = summary.get("objective_audit") or {}
    if audit:
        body += ["", "## Objective audit", "", "What the numbers mean and how they were "
                 "computed.", "", _md_table(audit_rows(audit), ("what", "value"))]
    body += ["", "## Samples", "", "![samples: E[x|z] with z drawn from the prior]"
             "(samples.png)", "",
             "## Use", "", "```python", "import vaelab", "",
             'run = vaelab.load_run("path/to/this/folder")  # or "hf://owner/name"',
             "x = run.data(\"test\")[:8]", "q = run.model.encode(x)            # q(z|x)",
             "recon = run.model.reconstruct(x)", "samples = run.model.sample(16)",
             "```", "",
             "## Files", "",
             f"`{WEIGHTS_FILE}` (weights, safetensors), `config.toml` (the resolved config), "
             "`meta.json` (event shape, dataset, versions: "
             f"vaelab {meta.get('vaelab', '?')}, torch {meta.get('torch', '?')}).", ""]
    return "\n".join(front + body)


def export_run(run: Run, out: str | Path, *, samples: Path | None = None) -> list[Path]:
    """Write ``run`` (a loaded ``vaelab.Run``) as a shareable folder ``out``; returns the
    files. ``samples``: a samples picture to include (default the run's samples.png)."""
    out = Path(out)
    src = RunDir(run.path)
    if out.resolve() == src.path.resolve():
        raise RunError(f"export folder {out} is the run folder itself; choose another OUT")
    if out.exists() and (not out.is_dir() or any(p.name not in EXPORT_FILES
                                                 for p in out.iterdir())):
        raise RunError(f"export folder {out} exists and holds other files; choose a new or "
                       "empty OUT (or an earlier export of a model)")
    out.mkdir(parents=True, exist_ok=True)
    summary = src.read_json("summary.json") if src.summary_path.is_file() else {}
    meta = {**run.meta, **{k: v for k, v in versions().items() if k not in run.meta},
            "exported_from": src.path.resolve().name}
    written = [save_safetensors(run.model, out / WEIGHTS_FILE)]
    atomic_write_text(out / "config.toml", src.config_path.read_text())
    written.append(out / "config.toml")
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    written.append(out / "meta.json")
    picture = samples if samples is not None else src.path / "samples.png"
    if picture.is_file():
        shutil.copyfile(picture, out / "samples.png")
        written.append(out / "samples.png")
    card = model_card(run.config, meta, summary, name=src.path.resolve().name)
    atomic_write_text(out / "README.md", card)
    written.append(out / "README.md")
    return written
