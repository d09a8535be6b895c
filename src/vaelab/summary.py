"""The end-of-run summary: test evaluation, pictures, and the audit a reader needs before
trusting any number in it (what objective, which likelihood, binarization, latent family,
whether the decoder's outputs fit the data's range)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaelab.build import build_objective
from vaelab.config import Config
from vaelab.data import ArrayDataset
from vaelab.data.prepare import eval_split, load_split, uses_binarization
from vaelab.data.seeded import data_line
from vaelab.evaluation.evaluate import REDUCTION
from vaelab.training.runs import RunDir
from vaelab.training.trainer import Trainer

if TYPE_CHECKING:  # annotations only: api.py imports this module
    from vaelab.api import Run


def summarize(run: Run, trainer: Trainer, run_dir: RunDir, *, pictures: bool) -> dict[str, Any]:
    """Test-set evaluation, pictures and the facts needed to read the numbers."""
    config = run.config
    iw_samples, test_note = final_iw_samples(config, trainer.state.elapsed)
    test = run.evaluate(config.data.test_split, progress=config.train.progress,
                        iw_samples=iw_samples) if config.data.test_split else {}
    history = run_dir.read_metrics()
    summary: dict[str, Any] = {
        "test": test,
        **({"test_note": test_note} if test_note and test else {}),
        "epochs": trainer.state.epoch,
        "steps": trainer.state.step,
        "train_seconds": round(trainer.state.elapsed, 2),
        "images_per_sec": round(sum(r["images_per_sec"] for r in history) / len(history), 1)
        if history else None,
        "stop_reason": trainer.stop_reason or "completed",
        "checkpoint": "best" if run_dir.best_checkpoint.is_file() else "last",
        "objective_audit": objective_audit(run),
        "pictures": [],
    }
    if run.meta.get("data"):  # data from a file: its seeded split, classes, columns
        summary["data"] = {**run.meta["data"],
                           "line": data_line(config.data.name, run.meta["data"])}
    audit_range = summary["objective_audit"]["output_range"]
    summary["warnings"] = list(test.get("warnings", [])) + (
        [f"output range: {audit_range['note']}"] if audit_range["status"] != "ok" else [])
    if pictures:
        from vaelab.viz.figures import render_safely

        if config.train.inference == "mean-field":  # the encoder is untrained: prior only
            summary["pictures"], summary["pictures_skipped"] = render_safely(
                run, kinds=("samples", "curves", "grid"))
        else:
            summary["pictures"], summary["pictures_skipped"] = render_safely(run)
        if config.data.test_split and tuple(run.model.latent_shape) == (2,) \
                and config.train.inference != "mean-field":
            from vaelab.viz.plots import plot_latent_2d

            test_data = load_split(config, config.data.test_split)
            made = plot_latent_2d(run.model,
                                  run.data(config.data.test_split)[:2000].to(run.device),
                                  run_dir.path / "latent-prior.png",
                                  None if test_data.y is None else test_data.y[:2000])
            summary["pictures"].append(made.name)
    return summary


SHORT_RUN_SECONDS = 60.0


def final_iw_samples(config: Config, train_seconds: float) -> tuple[int, str]:
    """K for the end-of-training log-likelihood, and a note when it is not eval.iw_samples:
    a run trained for seconds should not spend minutes on K=1000 over the test set."""
    ev = config.eval
    if train_seconds < SHORT_RUN_SECONDS and 0 < ev.short_run_iw_samples < ev.iw_samples:
        return ev.short_run_iw_samples, (
            f"log-likelihood with K={ev.short_run_iw_samples} instead of eval.iw_samples="
            f"{ev.iw_samples}: the run trained for {train_seconds:.1f} s (< "
            f"{SHORT_RUN_SECONDS:.0f} s; eval.short_run_iw_samples); `vaelab eval RUN` uses "
            f"K={ev.iw_samples}")
    return ev.iw_samples, ""


def objective_audit(run: Run, data: ArrayDataset | None = None) -> dict[str, Any]:
    """One line a reader needs before trusting any number in the summary; ``data`` (raw,
    not binarized; default the test split) is checked against the decoder's output range."""
    from vaelab.evaluation.diagnostics import output_range_check

    cfg = run.config
    obj = cfg.objective
    free_bits = f"free bits {obj.free_bits}" + (f" per group of {obj.free_bits_groups}"
                                                if obj.free_bits_groups else " per dimension")
    audit: dict[str, Any] = {
        "reduction": REDUCTION,
        "objective": f"{obj.name}, K={obj.samples}, "
                     f"KL {obj.kl}, beta={obj.beta}, "
                     f"warm-up {obj.warmup_epochs} epochs, "
                     f"{free_bits}",
        "kl_weight": f"beta={obj.beta}" + (f", linear warm-up from 0 over {obj.warmup_epochs} "
                                           "epochs" if obj.warmup_epochs > 0 else ""),
        "likelihood": cfg.model.likelihood,
        "binarization": run.binarization_note(),
        "latent": latent_audit(run),
        "data_range_checked": run.model.likelihood.data_range is not None,
    }
    data = data if data is not None else load_split(cfg, eval_split(cfg))
    audit["output_range"] = output_range_check(run.model, cfg.model.likelihood, data.x,
                                               is_8bit=data.is_8bit,
                                               binarized=uses_binarization(cfg))
    audit["line"] = (f"objective audit: {audit['objective']}; {audit['likelihood']} "
                     f"likelihood; sum over data elements, mean over batch; output range "
                     f"{audit['output_range']['status']}")
    return audit


def latent_audit(run: Run) -> str:
    """The latent family, and for discrete latents how training and evaluation differ."""
    cfg = run.config
    shape = " x ".join(str(d) for d in run.model.latent_shape)
    if not run.model.posterior.discrete:
        return f"{cfg.model.latent}, {shape}"
    objective = build_objective(cfg.objective, tuple(run.model.event_shape), discrete=True)
    training = objective.estimator.name
    if objective.relaxed:
        training += f" relaxation, {objective.temperature.describe()}"
        if cfg.objective.kl == "relaxed":
            lam = cfg.objective.prior_temperature
            training += (", KL between the relaxed posterior and a relaxed prior at "
                         + (f"temperature {lam:g}" if lam else "the same temperature"))
    prior = "uniform" if cfg.model.prior == "auto" else cfg.model.prior
    return (f"{cfg.model.latent}, {shape}, {prior} prior; "
            f"training: {training}; evaluation: the discrete model (hard samples, exact "
            "KL, importance sampling with discrete proposals), never the relaxation")
