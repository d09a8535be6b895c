"""A run's numbers as (label, value) rows: the test split's figures and the objective
audit, shared by the HTML report (viz/report.py) and the model card (viz/export.py)."""

from __future__ import annotations

from typing import Any


def test_rows(summary: dict[str, Any], digits: int = 3) -> list[tuple[str, str]]:
    """The test split's numbers as (label, value) rows: the ELBO with its two terms, the
    importance-sampled NLL, active units (what the report and the model card show)."""
    test = summary.get("test") or {}
    rows = []
    if "elbo" in test:
        rows.append(("test ELBO, nats", f"{test['elbo']:.{digits}f} ± "
                                        f"{test['elbo_stderr']:.{digits}f}"))
        rows.append(("  reconstruction E_q log p(x|z)", f"{test['rec']:.{digits}f}"))
        rows.append(("  KL(q||p)", f"{test['kl']:.{digits}f}"))
    if "nll" in test:
        rows.append((f"test NLL (importance sampling, K={test.get('iw_samples')})",
                     f"{test['nll']:.{digits}f} ± {test['log_likelihood_stderr']:.{digits}f}"))
    if "active_units" in test:
        rows.append(("active units", f"{test['active_units']}/{test['latent_units']}"))
    return rows


def audit_rows(audit: dict[str, Any]) -> list[tuple[str, str]]:
    """The objective audit as (what, value) rows a reader can scan (the report's table too)."""
    labels = {"objective": "objective", "kl_weight": "KL weight", "likelihood": "likelihood",
              "latent": "latent", "binarization": "binarization", "reduction": "reduction",
              "data_range_checked": "data range checked", "output_range": "output range"}
    rows = []
    for key, label in labels.items():
        if key not in audit:
            continue
        value = audit[key]
        if isinstance(value, dict):  # output_range: status and the note that explains it
            value = value.get("status", "") + (f": {value['note']}" if value.get("note")
                                               else "")
        rows.append((label, "yes" if value is True else "no" if value is False else str(value)))
    rows += [(k.replace("_", " "), str(v)) for k, v in audit.items()
             if k not in labels and k != "line"]
    return rows
