"""Experiment trackers (``train.loggers``): TensorBoard and MLflow, through their own writers.

Each tracker gets the resolved config as hyperparameters, per-step scalars (every
``train.log_every_steps`` steps), the per-epoch record that also goes to metrics.jsonl,
the final evaluation, and the run's pictures as images. Both are optional extras; a run
asking for one that is not installed fails before anything is trained or written.

* TensorBoard: ``torch.utils.tensorboard.SummaryWriter`` into ``RUN/tensorboard``
  (``tensorboard --logdir RUN/tensorboard``).
* MLflow: ``mlflow.MlflowClient`` with a local file store in ``RUN/mlruns`` (or
  ``train.mlflow_uri``), experiment "vaelab", one MLflow run per vaelab run (a resumed run
  continues it; its id is kept in ``RUN/trackers.json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaelab.config import Config, ConfigError

EXTRAS = {"tensorboard": ("tensorboard", "vaelab[tensorboard]"),
          "mlflow": ("mlflow", "vaelab[mlflow]")}


def check_loggers(names: Sequence[str]) -> None:
    """ConfigError (one line, with the pip command) for an unknown or uninstalled tracker."""
    for name in names:
        if name not in EXTRAS:
            raise ConfigError(f"train.loggers: '{name}' is not a tracker; choose from "
                              f"{', '.join(EXTRAS)}")
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.loggers includes {name}, but {module} is not installed: "
                              f"pip install '{extra}'")


def flat_config(config: Config) -> dict[str, Any]:
    """``section.key`` -> value, lists as text: hyperparameters as trackers take them."""
    return {f"{section}.{key}": value if isinstance(value, bool | int | float | str)
            else json.dumps(value)
            for section, values in config.to_dict().items() for key, value in values.items()}


def numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, run_path: Path, config: Config):
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        self.writer = SummaryWriter(log_dir=str(run_path / "tensorboard"))

    def hparams(self, test: dict[str, float]) -> None:
        """The config as hyperparameters beside the final numbers (the HParams tab);
        run_name "." keeps them in the run's own log dir instead of a sub-run."""
        metrics = {f"hparam/{k}": test[k] for k in ("elbo", "nll") if k in test}
        self.writer.add_hparams(flat_config(self.config), metrics, run_name=".")

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        self.writer.add_image(name, pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, run_path: Path, config: Config):
        uri = config.train.mlflow_uri or (run_path / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=uri)
        state_path = run_path / "trackers.json"
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if state.get("mlflow_uri") == uri and state.get("mlflow_run_id"):
            self.run_id = state["mlflow_run_id"]  # a resumed run continues its MLflow run
            return
        experiment = self.client.get_experiment_by_name("vaelab")
        experiment_id = experiment.experiment_id if experiment is not None \
            else self.client.create_experiment("vaelab")
        self.run_id = self.client.create_run(experiment_id,
                                             run_name=run_path.resolve().name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat_config(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        state_path.write_text(json.dumps({"mlflow_uri": uri, "mlflow_run_id": self.run_id}))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{k}", v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="pictures")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackers:
    """The trackers of one run (rank 0 only); every call fans out to each of them."""

    def __init__(self, run_path: Path, config: Config):
        kinds: dict[str, type[TensorBoard] | type[MLflow]] = {"tensorboard": TensorBoard,
                                                              "mlflow": MLflow}
        self.trackers: list[TensorBoard | MLflow] = [kinds[name](run_path, config)
                                                     for name in config.train.loggers]

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def step(self, step: int, values: dict[str, float]) -> None:
        for t in self.trackers:
            t.scalars("step", values, step)

    def epoch(self, record: dict[str, Any]) -> None:
        values = numbers({k: v for k, v in record.items() if k not in ("epoch", "step")})
        for t in self.trackers:
            t.scalars("epoch", values, int(record["epoch"]))

    def final(self, test: dict[str, Any], pictures: list[Path], step: int) -> None:
        values = numbers({k: v for k, v in test.items() if k not in ("n",)})
        for t in self.trackers:
            t.scalars("test", values, step)
            if isinstance(t, TensorBoard):
                t.hparams(values)
            for path in pictures:
                if path.suffix == ".png" and path.is_file():
                    t.image(path.stem, path, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
