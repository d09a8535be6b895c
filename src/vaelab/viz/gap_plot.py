"""The amortization-gap picture of ``vaelab gap`` (the report of ``evaluation/gaps.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.viz.plots import plt, save_figure


def plot_gap(report: dict[str, Any], path: Path) -> Path:
    """Mean ELBO over refinement steps from the encoder and from the prior, with the
    amortized ELBO, the optimised ELBO and log p(x) as reference lines; full range and zoom."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    refs = [("amortized ELBO", report["amortized_elbo"]["mean"], "--", "tab:gray"),
            ("optimised ELBO", report["optimised_elbo"]["mean"], "-.", "tab:green")]
    if "log_likelihood" in report:
        refs.append(("log p(x) (IS)", report["log_likelihood"]["mean"], ":", "tab:red"))
    styles = {"encoder": ("from the encoder (refinement)", "tab:blue"),
              "prior": ("from the prior (BBVI)", "tab:orange")}
    for ax in axes:
        for key, curve in report["curves"].items():
            label, colour = styles[key]
            ax.plot(range(len(curve)), curve, color=colour, lw=1, label=label)
        for label, value, style, colour in refs:
            ax.axhline(value, ls=style, color=colour, lw=1, label=f"{label} {value:.2f}")
        ax.set_xlabel("refinement step")
        ax.set_ylabel("mean ELBO, nats")
        ax.grid(alpha=0.3)
    top = max(v for _, v, _, _ in refs)
    gap = max(report["amortization_gap"]["mean"], 0.5)
    axes[1].set_ylim(report["amortized_elbo"]["mean"] - 3 * gap, top + gap)
    axes[0].set_title(f"ELBO during black-box VI, n={report['n']}")
    axes[1].set_title(f"zoom: amortization gap {report['amortization_gap']['mean']:.2f} nats")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
