"""The Python API, mirroring the CLI: ``fit(config)`` trains, ``load_run(path)`` loads.

    >>> import vaelab
    >>> run = vaelab.fit(vaelab.load_config(overrides=["train.epochs=1"]), out="runs/demo")
    >>> run = vaelab.load_run("runs/demo")
    >>> q = run.model.encode(x)          # q(z|x): q.mean, q.sample()
    >>> px = run.model.decode(q.mean)    # p(x|z): px.mean
    >>> run.evaluate("test", iw_samples=5000)
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from vaelab import console, rng
from vaelab.build import (
    GIVEN,
    bbvi_estimator,
    build_model,
    build_objective,
    check_estimator,
    count_parameters,
    evaluation_kl,
    validate,
)
from vaelab.config import Config, ConfigError
from vaelab.data import ArrayDataset, binarize
from vaelab.data.given import COPY_DIR, PYTHON, GivenData, as_given, save_copy
from vaelab.data.prepare import (
    check_data,
    eval_split,
    prepare_eval_x,
    resolve_label_classes,
    uses_binarization,
    with_labels,
)
from vaelab.data.rows import DatasetRows, LabelledRows, Rows, static_binarization
from vaelab.data.standardize import Standardization
from vaelab.data.storage import split_dataset, training_rows
from vaelab.evaluation.evaluate import REDUCTION, elbo_terms, evaluate, mean_and_stderr
from vaelab.evaluation.layered import active_units_record
from vaelab.models.custom import class_path, is_import_path
from vaelab.models.hierarchical import HierarchicalVAE
from vaelab.models.latent_space import model_device
from vaelab.models.vae import VAE
from vaelab.rng import seed_everything, seeded
from vaelab.schedules import Progress
from vaelab.summary import summarize
from vaelab.training import distributed
from vaelab.training.distributed import pick_device
from vaelab.training.matmul import resolve_matmul
from vaelab.training.runs import (
    CHECKPOINT_FIX,
    RunDir,
    RunError,
    check_resumable,
    checkpoint_stamp,
    load_checkpoint,
    model_weights,
    resume_config,
)
from vaelab.training.speed import accelerate
from vaelab.training.trackers import Trackers, check_loggers
from vaelab.training.trainer import StepHook, Trainer
from vaelab.training.weights import (
    EXPORT_FILES,
    WEIGHTS_FILE,
    load_safetensors,
    save_safetensors,
    versions,
)

if TYPE_CHECKING:  # annotations only: viz/ is imported when a run needs pictures
    from vaelab.viz.snapshots import PosteriorSnapshots


@dataclass
class Run:
    """A trained model with its config and folder."""

    path: Path
    config: Config
    model: VAE
    meta: dict[str, Any]
    given: GivenData | None = None  # data passed to load_run(data=...) (docs/large-data.md)

    def data(self, split: str = "test") -> torch.Tensor:
        """The split as evaluated (binarized with the fixed seed for Bernoulli data; with
        one-hot labels appended for a conditional model, see ``with_labels``)."""
        data = self.dataset(split)
        return with_labels(self.config, data, prepare_eval_x(self.config, data))

    def dataset(self, split: str = "test") -> ArrayDataset:
        """The split as stored (not binarized): from ``data.name``, the data passed to
        ``load_run(data=...)``, or the run folder's copy of data passed to ``fit``."""
        kept = self.meta.get("data_splits")
        if self.given is None and isinstance(kept, list) and split not in kept:
            raise RunError(f"{self.path} keeps only the {', '.join(map(str, kept))} split(s) "
                           f"of the data passed to fit() (a Dataset or memmap is not copied); "
                           f"pass the data again: load_run(path, data=...)")
        return split_dataset(self.config, split, self.given)

    @property
    def device(self) -> torch.device:
        """Where the model lives: ``train.device``, or ``load_run(device=...)``."""
        return model_device(self.model)

    def evaluate(self, split: str = "test", *, iw_samples: int | None = None,
                 progress: bool = True, limit: int | None = None,
                 seed: int | None = None) -> dict[str, Any]:
        """The evaluation report of ``split`` (as ``vaelab eval --json``).

        ``limit`` (an integer >= 1; default ``eval.limit``, where 0 = all) evaluates the
        first points only; ``seed`` (default ``eval.seed``) fixes every draw, so the same
        call gives the same digits; ``progress`` draws a bar on a terminal, log lines
        elsewhere.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"limit={limit!r}: must be an integer >= 1 (the first N points)")
        ev = self.config.eval
        limit = ev.limit if limit is None else limit
        x = self.data(split)
        if limit:
            x = x[:limit]
        x = x.to(self.device)
        model, note, warning = self.model, None, None
        seed = ev.seed if seed is None else seed
        with seeded(seed, self.device):
            if self.config.train.inference == "mean-field":  # no encoder: BBVI for each point
                from vaelab.inference.refine import (
                    BBVI_LR,
                    BBVI_LR_FINAL,
                    BBVI_MAX_STEPS,
                    BBVI_TOL,
                    bbvi_samples,
                    fit_posteriors,
                )

                estimator = bbvi_estimator(self.model.posterior,
                                           bbvi_samples(self.model.posterior, None))
                model = fit_posteriors(self.model, x, steps=ev.refine_steps or None,
                                       progress=progress, estimator=estimator)
                info = getattr(model, "bbvi", {})
                budget = (f"{ev.refine_steps} Adam steps" if ev.refine_steps else
                          f"{info.get('steps')} Adam steps (until a 500-step cycle gained < "
                          f"{BBVI_TOL} nats per point)")
                note = (f"q(z|x) per datapoint by BBVI from the prior: {budget}, lr "
                        f"{BBVI_LR} -> {BBVI_LR_FINAL} (cosine)")
                if info.get("converged") is False:
                    warning = (f"BBVI did not converge within {BBVI_MAX_STEPS} steps: the "
                               "ELBO and log p(x) of this mean-field run are underestimated")
            report = evaluate(model, x, iw_samples=ev.iw_samples if iw_samples is None
                              else iw_samples, batch_size=ev.batch_size,
                              sample_chunk=ev.sample_chunk,
                              active_threshold=ev.active_threshold,
                              kl=evaluation_kl(self.config.objective), progress=progress)
        report["split"] = split
        report["seed"] = seed
        if warning:
            report.setdefault("warnings", []).append(warning)
        report["reduction"] = REDUCTION
        report["binarization"] = self.binarization_note()
        if note:
            report["inference"] = note
        return report

    def to_original(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space values (..., *event_shape) in the data's own units: a table trained
        standardised (data.standardize) gets ``x * std + mean`` per column; other data
        come back unchanged."""
        data = self.meta.get("data")
        record = data.get("standardize") if isinstance(data, dict) else None
        if not record:
            return x
        return Standardization.from_record(record, str(self.path / "meta.json")).invert(x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x) in the data's own units (``to_original``); ``mean=True`` gives
        E[x|z] for each z ~ p(z), ``mean=False`` a draw of x ~ p(x|z) too."""
        return self.to_original(self.model.sample(n, mean=mean))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mode of q(z|x)] in the data's own units, for ``x`` as ``data()`` gives it."""
        return self.to_original(self.model.reconstruct(x))

    def binarization_note(self) -> str:
        if not uses_binarization(self.config):
            return "none (data used as given)"
        return (f"train: {self.config.data.binarize}; evaluation: fixed Bernoulli draw with "
                f"seed {self.config.data.binarize_seed}")


def load_run(path: str | Path, *, checkpoint: str = "best", encoder: nn.Module | None = None,
             decoder: nn.Module | None = None, device: str | None = None,
             data: Any = None,
             matmul: Literal["auto", "onednn", "torch"] | None = None,
             threads: int | Literal["recorded"] | None = None) -> Run:
    """Load a run folder written by ``vaelab train`` (``checkpoint``: best or last), or a
    model exported by ``vaelab export`` (``hf://owner/name`` pulls one from the Hugging Face
    Hub), onto ``device`` (auto, cpu, cuda; default the run's ``train.device``).

    A run trained with your own modules passed to ``fit`` needs them again (``encoder=``,
    ``decoder=``: instances built as for training; their weights are loaded here); one
    whose config names them by import path (``model.encoder = "pkg.mod:Class"``) builds
    them itself. A run trained on data passed to ``fit`` reads the copy kept in its folder
    (``data/``; ``config.data.name`` points there, in memory only); ``data=`` passes the
    data again, as for ``fit`` (needed for the training split of a Dataset or memmap,
    which is not copied; docs/large-data.md).

    ``matmul``: the GEMM library of the linear layers. By default the one the run recorded
    (``train.matmul``, chosen when it was trained), so evaluation rounds as training did;
    ``"auto"`` times both again here, where another day or machine may rank them the other
    way (docs/scale.md); ``"onednn"`` or ``"torch"`` picks one.

    ``threads``: torch's intra-op threads for the whole process (``torch.set_num_threads``),
    set before ``matmul="auto"`` times the libraries. ``None`` or 0 (default) leave the
    process as it is (all cores in a fresh one); ``"recorded"`` takes the run's
    ``train.threads`` (what ``vaelab eval`` does, so that a run trained on one core beside
    another job is evaluated on one core too).
    """
    if matmul not in (None, "auto", "onednn", "torch"):
        raise ValueError(f"matmul={matmul!r}: choose auto, onednn or torch, or leave it out "
                         "for the library the run recorded")
    if threads is not None and threads != "recorded" and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads={threads!r}: give an integer >= 0 (0 = torch's default), "
                         "\"recorded\" for the run's train.threads, or leave it out")
    if str(path).startswith(HUB_PREFIX):
        path = pull_from_hub(str(path)[len(HUB_PREFIX):])
    run_dir = RunDir.existing(path)
    config = run_dir.read_config()
    meta = run_dir.read_json("meta.json")
    config, given = run_data(run_dir, config, meta, data)
    for key, module in (("encoder", encoder), ("decoder", decoder)):
        if getattr(config.model, key) == GIVEN and module is None:
            raise RunError(f"{run_dir.path} was trained with its {key} passed to fit() "
                           f"({meta.get(f'{key}_class', 'a Python module')}); pass one built "
                           f"the same way: load_run(path, {key}=...)")
    try:
        shape = meta.get("event_shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  and d > 0 for d in shape):
            raise RunError(f"{run_dir.meta_path} has no valid event_shape (got {shape!r:.60}); "
                           "the file was edited or damaged")
        model = build_model(config.model, tuple(shape), encoder=encoder,
                            decoder=decoder)
    except ConfigError as err:
        raise RunError(f"{run_dir.path}: {err}") from None
    ckpt_path = run_dir.best_checkpoint if checkpoint == "best" else run_dir.last_checkpoint
    if not ckpt_path.is_file():
        ckpt_path = run_dir.last_checkpoint
    weights = run_dir.path / WEIGHTS_FILE
    if not ckpt_path.is_file() and weights.is_file():  # an exported model (vaelab export)
        load_safetensors(model, weights)
    else:
        state = load_checkpoint(ckpt_path)
        load_weights(model, model_weights(state, ckpt_path), f"checkpoint {ckpt_path}")
    ctx = distributed.Context(device=pick_device(device or config.train.device))
    model.to(ctx.device).eval()
    wanted = config.train.threads if threads == "recorded" else (threads or 0)
    if wanted > 0:  # 0: torch's own setting (all cores in a fresh process), as in training
        torch.set_num_threads(wanted)
    if matmul is not None:  # instead of the library the run recorded when it was trained
        config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                       matmul=matmul))
    ev = config.eval  # auto (asked for, or a run from before train.matmul): timed at
    config = resolve_matmul(config, model, rows=ev.batch_size,  # evaluation's shapes
                            samples=ev.sample_chunk, ctx=ctx)
    return Run(path=run_dir.path, config=config, model=model, meta=meta, given=given)


def run_data(run_dir: RunDir, config: Config, meta: dict[str, Any],
             data: Any) -> tuple[Config, GivenData | None]:
    """The data of a loaded run: for one trained on data passed to ``fit``, ``data`` given
    again and/or the copy in the run folder (``data.name`` pointed at it, in memory only:
    config.toml keeps "python")."""
    if config.data.name != PYTHON:
        if data is not None:
            raise RunError(f"{run_dir.path} trained on data.name={config.data.name}; data= is "
                           "for runs trained on data passed to fit(data=...)")
        return config, None
    given = as_given(data) if data is not None else None
    copy = meta.get("data_copy")
    if isinstance(copy, str) and copy:
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, name=str(run_dir.path / copy)))
    elif given is None:
        raise RunError(f"{run_dir.path} was trained on data passed to fit() and keeps no copy "
                       "of them; pass them again: load_run(path, data=...)")
    return config, given


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load_weights(model: VAE, weights: dict[str, torch.Tensor], what: str, *,
                 fix: str = "") -> None:
    """``model.load_state_dict(weights)``, failing with the module whose weights differ."""
    result = model.state_dict()
    missing = [k for k in result if k not in weights]
    unexpected = [k for k in weights if k not in result]
    wrong = [k for k in result if k in weights and result[k].shape != weights[k].shape]
    if missing or unexpected or wrong:
        names = sorted({k.split(".")[0] for k in (*missing, *unexpected, *wrong)})
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("different shapes", wrong)) if keys]
        raise RunError(f"{what} does not match the model's {' and '.join(names)} "
                       f"({'; '.join(parts)}); " + (fix or f"build the {'/'.join(names)} as "
                       "it was for training (same class and arguments, or the run's config)"))
    try:
        model.load_state_dict(weights)
    except Exception as err:  # e.g. a dtype torch cannot copy into the parameter
        raise RunError(f"{what} does not fit the model ({first_line(err)})") from None


def given_networks(config: Config, encoder: nn.Module | None,
                   decoder: nn.Module | None) -> Config:
    """The config to record for a run trained with modules passed to ``fit``: model.encoder
    (decoder) becomes "python" unless it names an import path that rebuilds the module."""
    model = config.model
    # Any: replace() checks each keyword against its field's type; these are str fields
    updates: dict[str, Any] = {
        key: GIVEN for key, module in (("encoder", encoder), ("decoder", decoder))
        if module is not None and not is_import_path(getattr(model, key))}
    if not updates:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(model, **updates))


HUB_PREFIX = "hf://"


def pull_from_hub(repo_id: str) -> Path:
    """The local folder of a model exported by ``vaelab export`` and pushed to the Hugging
    Face Hub (``huggingface_hub.snapshot_download``; the optional extra ``vaelab[hub]``)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RunError(f"loading hf://{repo_id} needs huggingface_hub: "
                       "pip install 'vaelab[hub]'") from None
    return Path(snapshot_download(repo_id=repo_id, allow_patterns=list(EXPORT_FILES)))


def default_run_name(config: Config) -> str:
    stem = Path(config.data.name).stem if "/" in config.data.name else config.data.name
    return f"runs/{stem}-{config.model.latent}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(config: Config | None, out: str | Path | None = None, *, overwrite: bool = False,
        resume: str | Path | None = None, changes: list[str] | None = None,
        evaluate: bool | None = None, pictures: bool = True,
        encoder: nn.Module | None = None, decoder: nn.Module | None = None,
        data: Any = None) -> Run:
    """Train ``config`` into a run folder and evaluate on the test split; returns the Run.

    ``resume`` continues an existing run from its last checkpoint (its saved config wins),
    mid-epoch if that is where the checkpoint was taken; ``changes`` (``section.key=value``)
    extend it: ``train.epochs``, ``train.time_limit_minutes``, other run-time keys and
    ``eval.*`` may change, anything else is refused with the list of what changed. A
    resumed run with nothing left to train keeps its evaluation unless ``evaluate=True``.
    Under torchrun every process calls this and trains its share (see
    ``training/distributed.py``); only rank 0 writes files. ``encoder``/``decoder``: your
    own ``nn.Module``s in place of model.encoder/decoder (the contract: docs/own-model.md);
    the latent family, prior and likelihood still come from the config. Pass them again to
    resume, and to ``load_run``. ``data``: your own data instead of ``data.name``: an
    array or tensor (split by ``data.split_fractions``), an ``(x, y)`` pair, a torch
    ``Dataset``, or ``{"train": ..., "valid": ..., "test": ...}`` (docs/large-data.md);
    arrays in memory are copied into the run folder so the run can be evaluated and
    resumed from it alone.
    Unlike the ``vaelab`` command, this does not tune glibc's malloc for the process (about
    8% faster steps, ``training/heap.py``): call
    ``vaelab.training.heap.keep_freed_memory()`` first to opt in.
    """
    changed: list[str] = []
    if resume is not None:
        config, changed = resume_config(RunDir.existing(resume).read_config(), changes or [],
                                        resume)
        # the run's own config, as saved; train.init_from served only its first start
        validate(dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                       init_from="")))
    elif changes:
        raise ConfigError("changes= applies to a resumed run; put them in the config")
    else:
        assert config is not None, "fit needs a config (or resume=RUN)"
        validate(config)  # every config check, before any data is loaded or file written
    source = data_source(config, resume, data)  # data= checked before anything is written
    if source.given is not None and resume is None:  # the run records where its data came from
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      name=PYTHON))
    # malloc is left alone here: tuning it is process-wide, so only the CLI opts in
    # (training/heap.py); a library user may call keep_freed_memory() first
    ctx = distributed.setup(config.train.device)
    networks = Networks(encoder, decoder)
    try:
        run = _fit(config, ctx, out, overwrite=overwrite, resume=resume, pictures=pictures,
                   networks=networks, changed=changed, evaluate=evaluate, source=source)
    except BaseException:
        distributed.cleanup(ctx, wait=False)
        raise
    distributed.cleanup(ctx)
    return run


@dataclass(frozen=True)
class DataSource:
    """Where a run's data come from besides ``data.name``: data passed to ``fit``, or (a
    resumed run trained on such data) the copy in its folder."""

    given: GivenData | None = None
    copy: str = ""  # the copy's path, read as data.name (the saved config keeps "python")

    def config(self, config: Config) -> Config:
        """``config`` as the data loaders should read it."""
        if not self.copy:
            return config
        return dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                    name=self.copy))


def data_source(config: Config, resume: str | Path | None, data: Any) -> DataSource:
    """``fit``'s data argument checked (a one-line DataError naming the problem, before
    anything is written), or a resumed run's copy of the data it was trained on."""
    given = as_given(data) if data is not None else None
    if resume is None or config.data.name != PYTHON:
        if given is not None and resume is not None:
            raise ConfigError(f"{resume} trained on data.name={config.data.name}; data= is for "
                              "runs trained on data passed to fit(data=...)")
        return DataSource(given)
    if given is not None:
        return DataSource(given)
    run_dir = RunDir.existing(resume)
    meta = run_dir.read_json("meta.json")
    kept, copy = meta.get("data_splits") or [], meta.get("data_copy") or ""
    if not copy or config.data.train_split not in kept:
        raise RunError(f"{run_dir.path} was trained on data passed to fit() that its folder "
                       "does not keep (a Dataset or memmap); resume with them: "
                       "fit(resume=RUN, data=...)")
    return DataSource(copy=str(run_dir.path / copy))


@dataclass(frozen=True)
class Networks:
    """Modules passed to ``fit`` in place of the configured encoder and decoder."""

    encoder: nn.Module | None = None
    decoder: nn.Module | None = None


@dataclass
class _Setup:
    """Everything a run needs, built and checked before any file is written."""

    config: Config
    train: Rows  # the training split as stored (data/rows.py)
    model: VAE
    objective: Any  # build.ConfiguredObjective
    train_x: Rows  # what the trainer reads: on the device; statically binarized if asked
    valid_x: torch.Tensor | None  # as evaluated (fixed binarization)
    dynamic: bool  # fresh binarization of every training batch
    mode: Any  # inference/modes.py: semi-amortized or mean-field, else None
    step_hook: Any  # gradient-variance probe, or None
    source: DataSource = DataSource()  # data passed to fit, or a resumed run's copy
    trackers: Trackers | None = None  # train.loggers, on rank 0 once the run folder exists


def _fit(config: Config, ctx: distributed.Context, out: str | Path | None = None, *,
         overwrite: bool = False, resume: str | Path | None = None,
         pictures: bool = True, networks: Networks = Networks(),
         changed: list[str] | None = None, evaluate: bool | None = None,
         source: DataSource = DataSource()) -> Run:
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    run_dir = RunDir.existing(resume) if resume is not None else None
    config = given_networks(config, networks.encoder, networks.decoder)
    seed_everything(config.train.seed)
    setup = _set_up(config, ctx, warm=resume is None, networks=networks, source=source)
    config = setup.config  # train.matmul=auto resolved
    if run_dir is None:  # only now: bad data or config must not leave an empty run folder
        run_dir = RunDir(distributed.on_main(lambda: RunDir.create(
            out or default_run_name(config), overwrite=overwrite).path))
    try:
        if ctx.is_main and config.train.loggers:
            setup.trackers = Trackers(run_dir.path, config)
        snapshots = posterior_snapshots(config, run_dir, setup.source)
        trainer = _make_trainer(setup, run_dir, ctx, snapshots)
        if resume is not None:
            _restore(setup, trainer, run_dir, ctx)
            if changed and ctx.is_main:  # the extended run's config, as it now trains
                run_dir.write_config(config)
        elif ctx.is_main:
            _write_new_run(setup, run_dir)
        if snapshots is not None and resume is None and ctx.is_main:
            snapshots.save(setup.model, 0)  # the posterior at initialisation: near the prior
        steps_before = trainer.state.step
        trainer.fit(setup.train_x)
    except BaseException:
        if setup.trackers:
            setup.trackers.close()
        if resume is None and ctx.is_main and run_dir.restore_replaced():
            console.LOGGER.warning(f"the new run failed before its first checkpoint; "
                                   f"{run_dir.path} holds the run it was to replace again")
        raise
    if not ctx.is_main:  # rank 0 evaluates and writes the summary
        return Run(path=run_dir.path, config=config, model=setup.model.eval(),
                   meta={"event_shape": list(setup.train.event_shape)})
    trained = trainer.state.step > steps_before
    if resume is not None and not trained and run_dir.summary_path.is_file() \
            and not evaluate:  # a finished run: keep its evaluation unless asked
        console.LOGGER.info(f"{run_dir.path}: nothing left to train; its evaluation is kept "
                            "(pass --evaluate to redo it)")
        if setup.trackers:
            setup.trackers.close()
        return load_run(run_dir.path, data=setup.source.given)
    return _finish(setup, trainer, run_dir, pictures=pictures)


def _set_up(config: Config, ctx: distributed.Context, *, warm: bool,
            networks: Networks = Networks(), source: DataSource = DataSource()) -> _Setup:
    """Load the data, build model and objective, check them together, move to the device.

    The training split is a row store (data/rows.py: uint8 in memory for 8-bit data, mapped
    .npy files, a torch Dataset): its mean and value range are made in chunks, and no
    float32 copy of it is made; the validation split is held in memory as evaluated.
    """
    check_loggers(config.train.loggers)  # a missing extra fails before any training
    dcfg = source.config(config)  # as the loaders read it (a resumed run's copy of its data)
    train = training_rows(dcfg, config.data.train_split, source.given).head(
        config.data.train_limit)
    valid = split_dataset(dcfg, config.data.valid_split, source.given) \
        if config.data.valid_split else None
    if source.given is not None and config.data.test_split:  # read (and checked) now: a bad
        split_dataset(dcfg, config.data.test_split, source.given)  # item fails before training
    if config.model.conditional and isinstance(train, DatasetRows):
        raise ConfigError("model.conditional=true needs the labels in memory, but a torch "
                          "Dataset passed as data= is read item by item; pass (x, y) arrays, "
                          "or .npy files with .labels.npy")
    resolve_label_classes(config, train)  # model.conditional: labels present, how many
    # in chunks (a Dataset: a seeded sample); each process reads its share of the rows
    stats = train.statistics((ctx.rank, ctx.world), combine=distributed.all_reduce_sum)
    model = build_model(config.model, train.event_shape, data_mean=stats.mean,
                        data_x=train, encoder=networks.encoder, decoder=networks.decoder)
    if config.train.init_from and warm:
        warm_start(model, config.train.init_from)
    objective = build_objective(config.objective, train.event_shape,
                                discrete=model.posterior.discrete, fused=config.train.fused)
    check_estimator(config.objective, model)
    if objective.relaxed:  # warn now when annealing cannot reach its floor within training
        steps_per_epoch = -(-len(train) // config.train.batch_size)  # ceil
        objective.temperature.check_reaches_floor(config.train.epochs * steps_per_epoch)
    check_rows(config, model.likelihood, train)
    if valid is not None:
        check_data(config, model.likelihood, valid)
    train_x: Rows = train
    if uses_binarization(config) and config.data.binarize == "static":
        train_x = static_binarization(train_x, config.data.binarize_seed + 1)
    dynamic = uses_binarization(config) and config.data.binarize == "dynamic"
    if config.model.conditional:  # each batch (b, D + C): flattened x, then one-hot y
        train_x = labelled(config, train_x)
    valid_x = with_labels(config, valid, prepare_eval_x(config, valid)) \
        if valid is not None else None
    model.to(ctx.device)
    config = resolve_matmul(config, model, rows=max(1, config.train.batch_size // ctx.world),
                            samples=config.objective.samples, ctx=ctx)  # in its config.toml
    objective.to(ctx.device)
    train_x.to(ctx.device)
    valid_x = valid_x.to(ctx.device) if valid_x is not None else None
    accelerate([model.encoder, model.decoder], precision=config.train.precision,
               compile=config.train.compile, device_type=ctx.device.type)
    mode = None
    if config.train.inference != "amortized":
        from vaelab.inference.modes import build_mode

        mode = build_mode(config, model, objective, len(train_x), ctx.world)
        if mode is not None and mode.state is not None:
            mode.state.to(ctx.device)
    return _Setup(config, train, model, objective, train_x, valid_x, dynamic, mode,
                  grad_variance_hook(config, model, objective, dynamic), source)


def _labels_of(rows: Rows, y: torch.Tensor) -> ArrayDataset:
    """Labels ``y`` of some of ``rows``, as prepare.with_labels reads a dataset."""
    return ArrayDataset(values=torch.empty(len(y), 0), y=y, name=rows.name, split=rows.split,
                        source=rows.source, is_8bit=False)


def labelled(config: Config, rows: Rows) -> LabelledRows:
    """model.conditional: the store's batches with their one-hot labels appended (the labels
    are checked here, in chunks, so a bad one fails before training)."""
    assert rows.y is not None  # resolve_label_classes refused data without labels
    for chunk in rows.y.split(65536):
        with_labels(config, _labels_of(rows, chunk), torch.empty(len(chunk), 0))
    return LabelledRows(rows, lambda x, y: with_labels(config, _labels_of(rows, y), x))


def check_rows(config: Config, likelihood: Any, rows: Rows) -> None:
    """check_data for a store: its value range from the chunked statistics (a torch
    Dataset's sample; its other items are checked as they are read)."""
    stats = rows.statistics()
    if hasattr(rows, "check_unit"):  # a Dataset: refuse an item outside [0, 1] when read
        rows.check_unit = likelihood.data_range == (0.0, 1.0)
    extremes = ArrayDataset(values=torch.tensor([[stats.lo, stats.hi]]), y=None,
                            name=rows.name, split=rows.split, source=rows.source,
                            is_8bit=rows.is_8bit)
    check_data(config, likelihood, extremes)


def _make_trainer(setup: _Setup, run_dir: RunDir, ctx: distributed.Context,
                  snapshots: Any) -> Trainer:
    """The trainer with the VAE's step, validation, epoch-end and checkpoint functions."""
    config, model, objective, mode = setup.config, setup.model, setup.objective, setup.mode
    dynamic = setup.dynamic

    def step_fn(batch: torch.Tensor, progress: Progress):
        # binarization noise: this rank's slice of the global batch's draw
        xb = rng.bernoulli(batch) if dynamic else batch
        out = objective(model, xb, progress)
        return out.loss, out.metrics()

    if mode is not None:
        step_fn = mode.step_fn(lambda b: rng.bernoulli(b) if dynamic else b)

    def validate_fn() -> dict[str, float]:
        assert setup.valid_x is not None  # passed to the trainer only with a validation split
        terms = elbo_terms(model, setup.valid_x, kl=evaluation_kl(config.objective))
        record = {f"val_{'bound' if k == 'elbo' else k}": mean_and_stderr(v)[0]
                  for k, v in terms.items()}
        if isinstance(model, HierarchicalVAE):  # which layers carry information, per epoch
            record.update({f"val_{k}": v for k, v in active_units_record(
                model, setup.valid_x, config.eval.active_threshold).items()})
        return record

    def on_epoch_end(trainer: Trainer, record: dict[str, Any]) -> None:
        if objective.relaxed:  # the temperature of the epoch's last step
            record["temperature"] = objective.temperature.at(trainer.state.step - 1)
        run_dir.append_metrics(record)
        if setup.trackers:
            setup.trackers.epoch(record)
        if snapshots is not None and ctx.is_main and snapshots.due(trainer.state.epoch):
            snapshots.save(model, trainer.state.epoch)

    def checkpoint(trainer: Trainer, is_best: bool) -> None:
        payload = {"model": model.state_dict(), "objective": objective.state_dict(),
                   **trainer.state_dict(), **checkpoint_stamp(config, ctx.world)}
        if mode is not None and mode.state is not None:  # the mean-field table
            payload["inference"] = mode.state.state_dict()
        run_dir.checkpoints.save(payload, trainer.state.step, best=is_best,
                                 keep=config.train.keep_checkpoints)
        run_dir.drop_replaced()  # the run --overwrite replaced is not needed any more

    validates = setup.valid_x is not None and (mode is None or mode.validates)
    # the objective may train parameters of its own (a score-function baseline)
    return Trainer(config.train, nn.ModuleList([model, objective]), step_fn,
                   validate_fn=validate_fn if validates else None,
                   score_key="val_bound", bar_term="bound", epoch_line=epoch_line,
                   on_epoch_end=on_epoch_end, save_checkpoint=checkpoint,
                   on_step_end=setup.step_hook,
                   with_indices=mode is not None and mode.with_indices,
                   step_metrics=setup.trackers.step if setup.trackers else None)


def epoch_line(record: dict[str, Any]) -> str:
    """A VAE epoch's log line: the bound with its reconstruction and KL terms, for the
    training and validation splits, throughput and training time so far."""
    parts = []
    for split, prefix in (("train", "train_"), ("valid", "val_")):
        if f"{prefix}bound" in record:
            part = f"{split} bound {record[f'{prefix}bound']:.2f}"
            if f"{prefix}rec" in record and f"{prefix}kl" in record:
                part += f" (rec {record[f'{prefix}rec']:.2f}, KL {record[f'{prefix}kl']:.2f})"
            parts.append(part)
    parts += [f"{record['images_per_sec']:.0f} images/s", f"{record['wall_time']:.1f} s"]
    return ", ".join(parts)


def _restore(setup: _Setup, trainer: Trainer, run_dir: RunDir, ctx: distributed.Context) -> None:
    """Continue a run from its last checkpoint: weights, optimizer, position, RNG states."""
    if not run_dir.last_checkpoint.is_file():
        raise RunError(f"{run_dir.path} has no checkpoint yet (training stopped before the "
                       "first one); start it again with --overwrite")
    path = run_dir.last_checkpoint
    state = load_checkpoint(path)
    try:
        check_resumable(state, path, setup.config, ctx.world)
        load_weights(setup.model, model_weights(state, path), f"checkpoint {path}")
        if "objective" in state:
            setup.objective.load_state_dict(state["objective"])
        mode = setup.mode
        if mode is not None and mode.state is not None and "inference" in state:
            mode.state.load_state_dict(state["inference"])
        trainer.load_state_dict(state)
    except RunError:
        raise
    except Exception as err:  # a checkpoint whose training state is not what vaelab wrote
        raise RunError(f"checkpoint {path} cannot be resumed: its training state is damaged "
                       f"({type(err).__name__}: {first_line(err)}); {CHECKPOINT_FIX}") from None
    if ctx.is_main:
        run_dir.truncate_metrics(trainer.state.epoch)
        run_dir.checkpoints.remove_partial()


def _write_new_run(setup: _Setup, run_dir: RunDir) -> None:
    """config.toml and meta.json of a new run: what load_run needs to rebuild the model."""
    train, config, given = setup.train, setup.config, setup.source.given
    run_dir.write_config(config)
    data: dict[str, Any] = {"dataset": train.name}
    if given is not None:  # a copy in the run folder, so the run is usable from it alone
        copy, kept = save_copy(given, run_dir.path / COPY_DIR,
                               [s for s in (config.data.valid_split, config.data.test_split) if s],
                               fractions=config.data.split_fractions, seed=config.data.split_seed)
        data = {"dataset": given.describe(), "data_copy": copy, "data_splits": kept}
    run_dir.write_json("meta.json", {
        "event_shape": list(train.event_shape), **data,
        "train_source": train.source, "train_size": len(setup.train_x),
        "train_storage": train.storage,
        "is_8bit": train.is_8bit, "parameters": count_parameters(setup.model),
        **({"data": train.info} if train.info else {}),  # split, classes, standardisation
        "encoder_class": class_path(setup.model.encoder),
        "decoder_class": class_path(setup.model.decoder),
        **versions(), "python": platform.python_version()})


def _finish(setup: _Setup, trainer: Trainer, run_dir: RunDir, *, pictures: bool) -> Run:
    """Reload the best weights, evaluate, write summary.json and the report."""
    given = setup.config.model
    run = load_run(run_dir.path,  # modules passed to fit() are reused: they cannot be rebuilt
                   encoder=setup.model.encoder if given.encoder == GIVEN else None,
                   decoder=setup.model.decoder if given.decoder == GIVEN else None,
                   data=setup.source.given)
    # the weights alone, safetensors: what `vaelab export` and other tools read
    save_safetensors(run.model, run_dir.path / WEIGHTS_FILE)
    summary = summarize(run, trainer, run_dir, pictures=pictures)
    summary["training_step"] = ("fused ELBO or IWAE (inference/fused_elbo.py, fused_iwae.py, "
                                "fused_layered.py; train.fused)"
                                if setup.objective.trains_fused(setup.model) else
                                "autograd through the model's modules and distributions")
    run_dir.write_json("summary.json", summary)
    if pictures:
        from vaelab.viz.report import write_report

        write_report(run_dir.path)
    if setup.trackers:
        setup.trackers.final(summary.get("test", {}),
                             [run_dir.path / p for p in summary["pictures"]], trainer.state.epoch)
        setup.trackers.close()
    return run


def warm_start(model: VAE, source: str | Path) -> None:
    """Load another run's model weights into ``model`` (``train.init_from``).

    Only the weights: the optimizer, step count, temperature schedule and any trained
    baseline start afresh, so a run can continue another under a different objective or
    estimator (e.g. fine-tune a relaxed model with an unbiased estimator of the discrete ELBO).
    """
    run_dir = RunDir(source)
    if not run_dir.config_path.is_file():
        raise RunError(f"train.init_from={source} is not a vaelab run folder (no config.toml); "
                       "train that run first, or --set train.init_from=RUN with a run folder")
    path = run_dir.best_checkpoint if run_dir.best_checkpoint.is_file() else run_dir.last_checkpoint
    if not path.is_file():
        raise RunError(f"train.init_from={source} has no checkpoint yet; train it first or "
                       "point train.init_from at a finished run")
    state = load_checkpoint(path)
    load_weights(model, model_weights(state, path), f"checkpoint {path} (train.init_from)",
                 fix="use the same [model] section as that run")


def posterior_snapshots(config: Config, run_dir: RunDir,
                        source: DataSource = DataSource()) -> PosteriorSnapshots | None:
    """The snapshot recorder for the posterior animation, or None (train.snapshot_every=0)."""
    if config.train.snapshot_every <= 0:
        return None
    from vaelab.viz.snapshots import PosteriorSnapshots

    data = split_dataset(source.config(config), eval_split(config), source.given)
    n = config.train.snapshot_points
    return PosteriorSnapshots(run_dir.path, prepare_eval_x(config, data)[:n],
                              None if data.y is None else data.y[:n],
                              config.train.snapshot_every)


def grad_variance_hook(config: Config, model: VAE, objective: nn.Module,
                       dynamic: bool) -> StepHook | None:
    """A trainer step hook measuring the gradient variance every
    ``train.grad_variance_every`` steps on the current batch (None when off). It runs on a
    forked RNG, so training follows the same random stream with or without it."""
    every, draws = config.train.grad_variance_every, config.train.grad_variance_draws
    if every == 0:
        return None
    from vaelab.evaluation.gradients import measure, variance_record

    def hook(trainer: Trainer, batch: torch.Tensor, progress: Progress) -> dict[str, Any] | None:
        if progress.step % every:
            return None
        with torch.random.fork_rng(devices=[]):
            xb = binarize(batch) if dynamic else batch
            stats = measure(model, objective, xb, draws, progress=progress)
        return variance_record(stats, progress.step + 1)

    return hook
