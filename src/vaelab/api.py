"""The Python API, mirroring the CLI: ``fit(config)`` trains, ``load_run(path)`` loads.

    >>> import vaelab
    >>> run = vaelab.fit(vaelab.load_config(overrides=["train.epochs=1"]), out="runs/demo")
    >>> run = vaelab.load_run("runs/demo")
    >>> q = run.model.encode(x)          # q(z|x): q.mean, q.sample()
    >>> px = run.model.decode(q.mean)    # p(x|z): px.mean
    >>> run.evaluate("test", iw_samples=5000)
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.build import build_model, build_objective, count_parameters
from vaelab.config import Config
from vaelab.data import (
    ArrayDataset,
    binarize,
    check_unit_interval,
    fixed_binarization,
    load_dataset,
)
from vaelab.evaluate import elbo_terms, evaluate, mean_and_stderr
from vaelab.likelihoods import BernoulliLikelihood
from vaelab.model import VAE
from vaelab.runs import RunDir, RunError, load_checkpoint, save_checkpoint
from vaelab.train import Progress, Trainer

REDUCTION = ("nats per datapoint: log-densities summed over data elements and latent "
             "dimensions, averaged over datapoints")


def load_split(config: Config, split: str) -> ArrayDataset:
    return load_dataset(config.data.name, split, data_dir=config.data.data_dir or None)


def uses_binarization(config: Config) -> bool:
    return config.model.likelihood == "bernoulli" and config.data.binarize != "none"


def prepare_eval_x(config: Config, data: ArrayDataset) -> torch.Tensor:
    """Evaluation data: a fixed, seeded binarization for Bernoulli data, so numbers compare."""
    if uses_binarization(config):
        return fixed_binarization(data.x, config.data.binarize_seed)
    return data.x


def check_data(config: Config, model: VAE, data: ArrayDataset) -> None:
    lo_hi = model.likelihood.data_range
    if lo_hi == (0.0, 1.0):
        check_unit_interval(data.x, f"{data.name} ({data.split})")


@dataclass
class Run:
    """A trained model with its config and folder."""

    path: Path
    config: Config
    model: VAE
    meta: dict[str, Any]

    def data(self, split: str = "test") -> torch.Tensor:
        """The split as evaluated (binarized with the fixed seed for Bernoulli data)."""
        return prepare_eval_x(self.config, load_split(self.config, split))

    def evaluate(self, split: str = "test", *, iw_samples: int | None = None,
                 progress: bool = False, limit: int | None = None) -> dict[str, Any]:
        x = self.data(split)
        if limit is not None:
            x = x[:limit]
        ev = self.config.eval
        report = evaluate(self.model, x, iw_samples=ev.iw_samples if iw_samples is None
                          else iw_samples, batch_size=ev.batch_size,
                          sample_chunk=ev.sample_chunk, active_threshold=ev.active_threshold,
                          kl=self.config.objective.kl, progress=progress)
        report["split"] = split
        report["reduction"] = REDUCTION
        report["binarization"] = self.binarization_note()
        return report

    def binarization_note(self) -> str:
        if not uses_binarization(self.config):
            return "none (data used as given)"
        return (f"train: {self.config.data.binarize}; evaluation: fixed Bernoulli draw with "
                f"seed {self.config.data.binarize_seed}")


def load_run(path: str | Path, *, checkpoint: str = "best") -> Run:
    """Load a run folder written by ``vaelab train`` (``checkpoint``: best or last)."""
    run_dir = RunDir.existing(path)
    config = run_dir.read_config()
    meta = run_dir.read_json("meta.json")
    model = build_model(config.model, tuple(meta["event_shape"]))
    ckpt_path = run_dir.best_checkpoint if checkpoint == "best" else run_dir.last_checkpoint
    if not ckpt_path.is_file():
        ckpt_path = run_dir.last_checkpoint
    state = load_checkpoint(ckpt_path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RunError(f"checkpoint {ckpt_path} does not match the run's config: "
                       f"{str(err).splitlines()[0]}") from None
    model.eval()
    return Run(path=run_dir.path, config=config, model=model, meta=meta)


def default_run_name(config: Config) -> str:
    stem = Path(config.data.name).stem if "/" in config.data.name else config.data.name
    return f"runs/{stem}-{config.model.latent}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(config: Config, out: str | Path | None = None, *, overwrite: bool = False,
        resume: str | Path | None = None, pictures: bool = True) -> Run:
    """Train ``config`` into a run folder and evaluate on the test split; returns the Run.

    ``resume`` continues an existing run from its last checkpoint (its saved config wins).
    """
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    if resume is not None:
        run_dir = RunDir.existing(resume)
        config = run_dir.read_config()
    torch.manual_seed(config.train.seed)
    train = load_split(config, config.data.train_split)
    valid = load_split(config, config.data.valid_split) if config.data.valid_split else None
    model = build_model(config.model, train.event_shape, data_mean=train.x.mean(0))
    objective = build_objective(config.objective)
    for data in (train, valid):
        if data is not None:
            check_data(config, model, data)
    train_x = train.x
    if uses_binarization(config) and config.data.binarize == "static":
        train_x = fixed_binarization(train_x, config.data.binarize_seed + 1)
    dynamic = uses_binarization(config) and config.data.binarize == "dynamic"
    valid_x = prepare_eval_x(config, valid) if valid is not None else None
    if resume is None:  # only now: bad data or config must not leave an empty run folder
        run_dir = RunDir.create(out or default_run_name(config), overwrite=overwrite)

    def step_fn(batch: torch.Tensor, progress: Progress):
        xb = binarize(batch) if dynamic else batch
        out = objective(model, xb, progress)
        return out.loss, out.metrics()

    def validate_fn() -> dict[str, float]:
        terms = elbo_terms(model, valid_x, kl=config.objective.kl)
        return {f"val_{'bound' if k == 'elbo' else k}": mean_and_stderr(v)[0]
                for k, v in terms.items()}

    def on_epoch_end(trainer: Trainer, record: dict[str, Any]) -> None:
        run_dir.append_metrics(record)

    def checkpoint(trainer: Trainer, is_best: bool) -> None:
        payload = {"model": model.state_dict(), **trainer.state_dict()}
        save_checkpoint(run_dir.last_checkpoint, payload)
        if is_best:
            save_checkpoint(run_dir.best_checkpoint, payload)

    trainer = Trainer(config.train, model, step_fn,
                      validate_fn=validate_fn if valid_x is not None else None,
                      on_epoch_end=on_epoch_end, save_checkpoint=checkpoint)
    if resume is not None:
        state = load_checkpoint(run_dir.last_checkpoint)
        model.load_state_dict(state["model"])
        trainer.load_state_dict(state)
        run_dir.truncate_metrics(trainer.state.epoch)
    else:
        run_dir.write_config(config)
        run_dir.write_json("meta.json", {
            "event_shape": list(train.event_shape), "dataset": train.name,
            "train_source": train.source, "train_size": int(train_x.shape[0]),
            "is_8bit": train.is_8bit, "parameters": count_parameters(model),
            "torch": torch.__version__, "python": platform.python_version()})
    trainer.fit(train_x)
    run = load_run(run_dir.path)
    summary = summarize(run, trainer, run_dir, pictures=pictures)
    run_dir.write_json("summary.json", summary)
    return run


def summarize(run: Run, trainer: Trainer, run_dir: RunDir, *, pictures: bool) -> dict[str, Any]:
    """Test-set evaluation, pictures and the facts needed to read the numbers."""
    config = run.config
    test = run.evaluate(config.data.test_split, progress=config.train.progress) \
        if config.data.test_split else {}
    history = run_dir.read_metrics()
    summary: dict[str, Any] = {
        "test": test,
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
    if pictures:
        from vaelab import plots

        x_test = run.data(config.data.test_split) if config.data.test_split else None
        made = [plots.plot_samples(run.model, run_dir.path / "samples.png"),
                plots.plot_curves(history, run_dir.path / "curves.png")]
        if x_test is not None:
            made.append(plots.plot_reconstructions(run.model, x_test,
                                                   run_dir.path / "reconstructions.png"))
        summary["pictures"] = [p.name for p in made if p is not None]
    return summary


def objective_audit(run: Run) -> dict[str, Any]:
    """One line a reader needs before trusting any number in the summary."""
    cfg = run.config
    return {
        "reduction": REDUCTION,
        "objective": f"{cfg.objective.name}, K={cfg.objective.samples}, "
                     f"KL {cfg.objective.kl}, beta={cfg.objective.beta}, "
                     f"warm-up {cfg.objective.warmup_epochs} epochs, "
                     f"free bits {cfg.objective.free_bits}",
        "likelihood": cfg.model.likelihood,
        "binarization": run.binarization_note(),
        "data_range_checked": isinstance(run.model.likelihood, BernoulliLikelihood),
    }
