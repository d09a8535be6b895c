"""Discrete latents in training: the temperature schedule, config choices and their errors,
the class-sweep picture, and end-to-end runs on a tiny binary dataset."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch
from torch.distributions import Independent, OneHotCategorical, RelaxedOneHotCategorical

from vaelab.api import fit, load_run
from vaelab.build import build_model, build_objective, resolve_estimator
from vaelab.config import Config, ConfigError, ModelConfig, ObjectiveConfig
from vaelab.inference.estimators import EstimatorError, GumbelSoftmax, Pathwise, StraightThrough
from vaelab.models.kl import NoClosedFormKL, kl_term
from vaelab.models.priors import BernoulliPrior, CategoricalPrior
from vaelab.schedules import Progress, TemperatureSchedule, TemperatureWarning
from vaelab.training.runs import RunError
from vaelab.viz import plots

EVENT = (1, 8, 8)


# -- temperature schedule -----------------------------------------------------------------

def test_constant_schedule():
    schedule = TemperatureSchedule(tau0=0.7)
    assert [schedule.at(s) for s in (0, 1, 10**6)] == [0.7, 0.7, 0.7]
    assert schedule.steps_to_floor() is None


def test_annealed_schedule_follows_jang_et_al():
    """tau = max(tau_min, tau0 exp(-r t)), t rounded down to a multiple of N."""
    schedule = TemperatureSchedule(tau0=1.0, tau_min=0.5, rate=1e-4, every=1000)
    assert schedule.at(0) == 1.0
    assert schedule.at(999) == 1.0
    assert schedule.at(1000) == pytest.approx(math.exp(-0.1), rel=1e-12)
    assert schedule.at(5500) == pytest.approx(math.exp(-0.5), rel=1e-12)
    floor_step = schedule.steps_to_floor()
    assert floor_step == 7000  # ln 2 / 1e-4 = 6931.5 -> the update at 7000
    assert schedule.at(floor_step) == 0.5
    assert schedule.at(floor_step - 1) > 0.5
    values = [schedule.at(s) for s in range(0, 20_000, 250)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert "every 1000 steps" in schedule.describe()


def test_schedule_that_never_reaches_floor_warns():
    schedule = TemperatureSchedule(tau0=1.0, tau_min=0.5, rate=1e-4, every=1000)
    with pytest.warns(TemperatureWarning, match="never reaches temperature_min=0.5"):
        schedule.check_reaches_floor(5000)
    with pytest.warns(TemperatureWarning, match="temperature_rate to at least"):
        schedule.check_reaches_floor(5000)
    schedule.check_reaches_floor(7001)  # reaches it: no warning (warnings are errors here)
    TemperatureSchedule(tau0=1.0).check_reaches_floor(10)  # constant: nothing to reach
    with pytest.warns(TemperatureWarning, match="tau is never updated"):
        TemperatureSchedule(tau0=1.0, rate=1.0, every=100).check_reaches_floor(50)


@pytest.mark.parametrize("kwargs", [{"tau0": 0.0}, {"tau0": -1.0}, {"tau0": math.nan},
                                    {"rate": -1e-4}, {"every": 0},
                                    {"rate": 1e-4, "tau_min": 0.0},
                                    {"rate": 1e-4, "tau0": 0.4, "tau_min": 0.5}])
def test_bad_schedules_raise(kwargs):
    with pytest.raises(ValueError):
        TemperatureSchedule(**kwargs)


# -- config: families, priors, estimators, and their errors ---------------------------------

def model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"latent": "categorical", "latent_dim": 4, "num_classes": 3,
                          "hidden": [16], **kw})


def test_auto_prior_and_estimator_follow_the_latent_family():
    cat = build_model(model_cfg(), EVENT)
    assert cat.latent_shape == (4, 3)
    assert isinstance(cat.prior_module, CategoricalPrior)
    assert not list(cat.prior_module.parameters())  # uniform: fixed
    ber = build_model(model_cfg(latent="bernoulli", prior="learned"), EVENT)
    assert isinstance(ber.prior_module, BernoulliPrior)
    assert ber.latent_shape == (4,)
    assert [n for n, _ in ber.prior_module.named_parameters()] == ["logits"]
    assert resolve_estimator(ObjectiveConfig(), discrete=True) == "gumbel-softmax"
    assert resolve_estimator(ObjectiveConfig(), discrete=False) == "pathwise"
    assert isinstance(build_objective(ObjectiveConfig(), discrete=True).estimator, GumbelSoftmax)
    assert type(build_objective(ObjectiveConfig()).estimator) is Pathwise
    st = build_objective(ObjectiveConfig(estimator="straight-through"), discrete=True)
    assert isinstance(st.estimator, StraightThrough) and st.relaxed


def test_uniform_prior_probabilities():
    p = CategoricalPrior(4, 3)()
    z = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    assert p.log_prob(z).item() == pytest.approx(-4 * math.log(3))
    b = BernoulliPrior(5)()
    assert b.log_prob(torch.tensor([1.0, 0, 0, 1, 1])).item() == pytest.approx(-5 * math.log(2))


def test_objective_sets_the_scheduled_temperature_each_step():
    cfg = ObjectiveConfig(temperature=1.0, temperature_min=0.5, temperature_rate=0.1,
                          temperature_every=2)
    model = build_model(model_cfg(), EVENT)
    objective = build_objective(cfg, discrete=True)
    x = torch.bernoulli(torch.full((3, *EVENT), 0.5))
    for step in (0, 1, 2, 5, 100):
        objective(model, x, Progress(step=step, epoch=0.0))
        assert objective.estimator.temperature == objective.temperature.at(step)
    assert objective.estimator.temperature == 0.5


@pytest.mark.parametrize(("section", "key", "value", "match"), [
    ("objective", "temperature", 0.0, "objective.temperature=0.0: must be a number > 0"),
    ("objective", "temperature", -0.5, "objective.temperature=-0.5: must be a number > 0"),
    ("objective", "temperature_min", 0.0, "objective.temperature_min=0.0: must be a number > 0"),
    ("objective", "temperature_every", 0, "objective.temperature_every=0: must be an integer >= 1"),
    ("objective", "kl", "mc", "objective.kl=mc with objective.estimator=gumbel-softmax"),
    ("objective", "name", "iwae", "objective.name=iwae with objective.estimator="),
    ("model", "num_classes", 1, "model.num_classes=1: must be an integer >= 2"),
    ("model", "prior", "normal", "model.prior=normal is a prior over real-valued z"),
    ("model", "prior", "mixture", "model.prior=mixture is a prior over real-valued z"),
])
def test_bad_discrete_configs_fail_with_the_key_named(section, key, value, match):
    cfg = Config()
    cfg.model = model_cfg()
    cfg.objective.temperature_rate = 1e-3  # annealing on, so the floor is checked
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError, match=re.escape(match)):
        model = build_model(cfg.model, EVENT)
        build_objective(cfg.objective, EVENT, discrete=model.posterior.discrete)


def test_discrete_prior_with_gaussian_latent_fails():
    with pytest.raises(ConfigError, match=re.escape("model.prior=uniform is a prior over")):
        build_model(model_cfg(latent="gaussian", prior="uniform"), EVENT)


def test_relaxed_estimator_on_gaussian_latent_fails_clearly():
    model = build_model(model_cfg(latent="gaussian"), EVENT)
    objective = build_objective(ObjectiveConfig(estimator="gumbel-softmax"))
    with pytest.raises(EstimatorError, match="needs a discrete q"):
        objective(model, torch.zeros(2, *EVENT), Progress(0, 0.0))


def test_analytic_kl_without_closed_form_names_the_fix():
    q = Independent(OneHotCategorical(logits=torch.randn(5, 4, 3)), 1)
    p = Independent(RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(4, 3)), 1)
    with pytest.raises(NoClosedFormKL, match=re.escape("objective.kl")):
        kl_term(q, p, mode="analytic")


# -- the class sweep ----------------------------------------------------------------------

def test_class_sweep_varies_one_variable_and_fixes_the_rest(tmp_path, monkeypatch):
    model = build_model(model_cfg(), EVENT)
    seen = []
    decode = model.decode

    def spy(z):
        seen.append(z.clone())
        return decode(z)

    monkeypatch.setattr(model, "decode", spy)
    path = plots.plot_class_sweep(model, tmp_path / "sweep.png", variable=2, rows=5)
    assert path.is_file() and path.stat().st_size > 0
    codes = seen[0].view(5, 3, 4, 3)  # (rows, classes, N, C)
    eye = torch.eye(3)
    assert torch.equal(codes[:, :, 2], eye.expand(5, 3, 3))  # column c = class c
    others = codes[:, :, [0, 1, 3]]
    assert torch.equal(others, others[:, :1].expand_as(others))  # fixed along a row
    assert torch.equal(codes.sum(-1), torch.ones(5, 3, 4))  # valid one-hot codes
    with pytest.raises(ValueError, match="variable must be in"):
        plots.plot_class_sweep(model, tmp_path / "x.png", variable=4)
    gaussian = build_model(model_cfg(latent="gaussian"), EVENT)
    with pytest.raises(plots.NotApplicable, match="categorical"):
        plots.plot_class_sweep(gaussian, tmp_path / "g.png")


# -- end to end ---------------------------------------------------------------------------

def tiny_config(npz: str, **objective) -> Config:
    cfg = Config()
    cfg.data.name = npz
    cfg.data.binarize = "none"
    cfg.model = model_cfg()
    cfg.train.epochs = 2
    cfg.train.batch_size = 50
    cfg.train.progress = False
    cfg.eval.iw_samples = 20
    for key, value in objective.items():
        setattr(cfg.objective, key, value)
    return cfg


def test_fit_categorical_gumbel_softmax_logs_temperature_and_evaluates_discretely(
        tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, temperature=1.0, temperature_min=0.5, temperature_rate=0.2,
                      temperature_every=2)
    run = fit(cfg, out=tmp_path / "run", pictures=True)
    history = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    schedule = TemperatureSchedule(1.0, 0.5, 0.2, 2)
    assert [r["temperature"] for r in history] == [schedule.at(3), schedule.at(7)]
    summary = json.loads((run.path / "summary.json").read_text())
    assert "evaluation: the discrete model" in summary["objective_audit"]["latent"]
    assert "gumbel-softmax relaxation" in summary["objective_audit"]["latent"]
    test = summary["test"]
    assert math.isfinite(test["elbo"]) and math.isfinite(test["nll"])
    assert test["nll"] <= -test["elbo"] + 4 * test["elbo_stderr"]  # IS is tighter
    assert (run.path / "class-sweep.png").is_file()
    again = load_run(run.path)
    torch.testing.assert_close(again.model.state_dict(), run.model.state_dict())


def test_fit_bernoulli_straight_through_with_learned_prior(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, estimator="straight-through")
    cfg.model.latent, cfg.model.latent_dim, cfg.model.prior = "bernoulli", 6, "learned"
    run = fit(cfg, out=tmp_path / "run", pictures=False)
    history = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["temperature"] for r in history] == [1.0, 1.0]  # constant
    logits = load_run(run.path).model.prior_module.logits
    assert logits.abs().max() > 0  # trained and saved with the run
    summary = json.loads((run.path / "summary.json").read_text())
    assert "straight-through" in summary["objective_audit"]["latent"]


def test_init_from_continues_another_runs_weights_under_another_estimator(tiny_npz, tmp_path):
    """Relaxed training, then an unbiased estimator from its weights (docs/discrete.md):
    with a vanishing learning rate the second run ends where the first left off."""
    first = fit(tiny_config(tiny_npz), out=tmp_path / "relaxed", pictures=False)
    cfg = tiny_config(tiny_npz, estimator="score-function", baseline="leave-one-out", samples=2)
    cfg.train.init_from, cfg.train.epochs, cfg.train.lr = str(first.path), 1, 1e-12
    second = fit(cfg, out=tmp_path / "unbiased", pictures=False)
    torch.testing.assert_close(second.model.state_dict(), first.model.state_dict(),
                               rtol=0, atol=1e-9)
    assert load_run(second.path).config.train.init_from == str(first.path)  # recorded
    cfg.train.init_from = ""
    fresh = fit(cfg, out=tmp_path / "fresh", pictures=False)
    flat = torch.nn.utils.parameters_to_vector
    assert not torch.allclose(flat(fresh.model.parameters()), flat(first.model.parameters()))


def test_init_from_a_different_model_or_no_run_fails_before_writing(tiny_npz, tmp_path):
    first = fit(tiny_config(tiny_npz), out=tmp_path / "first", pictures=False)
    cfg = tiny_config(tiny_npz)
    cfg.model.latent_dim = 3
    cfg.train.init_from = str(first.path)
    with pytest.raises(RunError, match="does not match the model.*same \\[model\\] section"):
        fit(cfg, out=tmp_path / "second", pictures=False)
    cfg.train.init_from = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="nowhere': must be '' or a vaelab run folder"):
        fit(cfg, out=tmp_path / "second", pictures=False)
    assert not (tmp_path / "second").exists()


def test_fit_warns_when_annealing_cannot_finish(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, temperature_rate=1e-5, temperature_every=1)
    cfg.train.epochs = 1
    with pytest.warns(TemperatureWarning, match="4 steps end at tau"):
        fit(cfg, out=tmp_path / "run", pictures=False)


def test_active_units_count_categorical_variables(monkeypatch):
    """A categorical variable is one unit: only variable 1 depends on x here."""
    from vaelab.evaluation.evaluate import active_units

    model = build_model(model_cfg(), EVENT)  # 4 variables x 3 classes

    def encode(x):
        logits = torch.zeros(x.shape[0], 4, 3)
        logits[:, 1, 0] = 10 * (x.flatten(1)[:, 0] - 0.5)  # class 0 or not, by pixel 0
        return Independent(OneHotCategorical(logits=logits), 1)

    monkeypatch.setattr(model, "encode", encode)
    x = torch.bernoulli(torch.full((400, *EVENT), 0.5, dtype=torch.float32))
    count, variances = active_units(model, x)
    assert count == 1 and variances.shape == (4,)
    assert variances[1] > 0.1 and (variances[[0, 2, 3]] == 0).all()
