"""Training modes (semi-amortized, mean-field EM), the trainer's datapoint ids, and the
``vaelab gap`` command, on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from linear_gaussian import LinearGaussian
from tiny import make_npz, tiny_config
from vaelab.api import fit
from vaelab.build import build_objective
from vaelab.cli import main
from vaelab.config import ConfigError, ObjectiveConfig
from vaelab.evaluation.evaluate import elbo_terms
from vaelab.inference.modes import MeanField, SemiAmortized
from vaelab.inference.objectives import elbo
from vaelab.models.latents import FAMILIES, DiagonalGaussian
from vaelab.schedules import Progress
from vaelab.training.runs import load_checkpoint
from vaelab.training.trainer import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_npz(tmp_path_factory.mktemp("data") / "tiny.npz", n=160)


@pytest.fixture(scope="module")
def amortized_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "amortized"
    fit(tiny_config(data, "train.epochs=3"), out=out, pictures=False)
    return out


def test_trainer_passes_datapoint_ids_with_their_rows():
    cfg = tiny_config("unused").train
    cfg.batch_size = 7
    x = torch.randn(30, 3)
    module = torch.nn.Linear(3, 1)
    seen = []

    def step(batch, progress):
        idx, xb = batch
        assert torch.equal(x[idx], xb)
        seen.append(idx)
        loss = module(xb).pow(2).mean()
        return loss, {"bound": -loss.detach().expand(xb.shape[0])}

    trainer = Trainer(cfg, module, step, with_indices=True)
    trainer.fit(x, epochs=1)
    assert sorted(torch.cat(seen).tolist()) == list(range(30))
    assert trainer.state.history[0]["images_per_sec"] > 0


# -- semi-amortized ------------------------------------------------------------------------

def sa_config(through: bool, steps: int = 2, lr: float = 0.01):
    cfg = tiny_config("unused", "train.inference='semi-amortized'",
                      f"train.refine_steps={steps}", f"train.refine_lr={lr}",
                      f"train.refine_through={str(through).lower()}")
    return cfg


def encoder_grads(model):
    return [p.grad.clone() for p in model.encoder.parameters()]


def test_semi_amortized_without_through_gives_the_encoder_its_own_elbo_gradient():
    """Without backprop through the refinement, the encoder's gradient is exactly that of
    the plain amortized loss (same Monte Carlo draw), and the decoder's is that of the
    loss at the refined parameters."""
    lg = LinearGaussian(posterior="gaussian")
    model = lg.model
    x = lg.sample_x(8)
    objective = build_objective(ObjectiveConfig())
    step = SemiAmortized(sa_config(False), model, objective).step_fn(lambda b: b)
    progress = Progress(step=0, epoch=0.0)
    torch.manual_seed(0)
    loss, terms = step(x, progress)
    model.zero_grad()
    loss.backward()
    got = encoder_grads(model)
    decoder_got = model.decoder.output_layer.weight.grad.clone()
    torch.manual_seed(0)  # the first refinement step's draw is the amortized loss's draw
    model.zero_grad()
    elbo(model, x).loss.backward()
    for a, b in zip(got, encoder_grads(model), strict=True):
        torch.testing.assert_close(a, b)
    assert (terms["bound"] - terms["amortized_bound"]).mean() > 0  # refinement helped
    assert decoder_got.abs().sum() > 0


def test_semi_amortized_through_refinement_matches_finite_differences():
    """With refine_through the encoder is trained on the refined loss through the unrolled
    steps: its gradient for one encoder weight against central differences (the Monte
    Carlo draws fixed by reseeding; double precision)."""
    lg = LinearGaussian(posterior="gaussian")
    model = lg.model
    x = lg.sample_x(4)
    objective = build_objective(ObjectiveConfig())
    step = SemiAmortized(sa_config(True, steps=3), model, objective).step_fn(lambda b: b)
    progress = Progress(step=0, epoch=0.0)
    weight = model.encoder.net[-1].weight

    def loss_value():
        torch.manual_seed(1)
        return step(x, progress)[0]

    model.zero_grad()
    loss_value().backward()
    analytic = weight.grad.clone()
    h = 1e-6
    for i, j in [(0, 0), (1, 3), (2, 4), (3, 2)]:
        with torch.no_grad():
            weight[i, j] += h
            plus = loss_value().item()
            weight[i, j] -= 2 * h
            minus = loss_value().item()
            weight[i, j] += h
        assert abs((plus - minus) / (2 * h) - analytic[i, j].item()) < 1e-5 * (
            1 + abs(analytic[i, j].item()))


@pytest.mark.parametrize("through", [False, True])
def test_semi_amortized_training_runs_and_logs_both_bounds(data, tmp_path, through):
    config = tiny_config(data, "train.epochs=2", "train.inference='semi-amortized'",
                         "train.refine_steps=3", f"train.refine_through={str(through).lower()}")
    fit(config, out=tmp_path / "sa", pictures=False)
    records = [json.loads(line) for line in (tmp_path / "sa" / "metrics.jsonl").read_text()
               .splitlines()]
    assert all("train_amortized_bound" in r and "val_bound" in r for r in records)


# -- mean-field variational EM -------------------------------------------------------------

@pytest.fixture(scope="module")
def binary_data(tmp_path_factory):
    """8x8 binary images: noisy copies (5% flipped pixels) of 8 random prototypes."""
    rng = np.random.default_rng(0)
    protos = rng.random((8, 1, 8, 8)) < 0.5

    def sample(n):
        flips = rng.random((n, 1, 8, 8)) < 0.05
        return (protos[rng.integers(0, 8, n)] ^ flips).astype(np.float32)

    path = tmp_path_factory.mktemp("binary") / "binary.npz"
    np.savez(path, x_train=sample(80), x_valid=sample(32), x_test=sample(32))
    return path


def test_mean_field_em_trains_on_tiny_data_and_evaluates_by_bbvi(binary_data, tmp_path):
    config = tiny_config(binary_data, "train.epochs=8", "train.batch_size=8", "train.lr=0.01",
                         "train.inference='mean-field'", "train.mean_field_steps=10",
                         "eval.refine_steps=40", "data.train_limit=64")
    run = fit(config, out=tmp_path / "mf", pictures=True)
    records = [json.loads(line) for line in (tmp_path / "mf" / "metrics.jsonl").read_text()
               .splitlines()]
    bounds = [r["train_bound"] for r in records]
    # EM raises the training ELBO (measured +3.4 nats; one epoch's mean has stderr ~0.3)
    assert bounds[-1] > bounds[0] + 1.5, bounds
    assert all("val_bound" not in r for r in records)  # no encoder to validate
    state = load_checkpoint(tmp_path / "mf" / "checkpoints" / "last.pt")
    table = state["inference"]["params"]
    assert table.shape == (64, run.model.posterior.param_size)
    prior = run.model.posterior.prior_params()
    assert (table - prior).abs().sum(1).min() > 0  # every datapoint's lambda was updated
    summary = json.loads((tmp_path / "mf" / "summary.json").read_text())
    assert summary["test"]["inference"].startswith("q(z|x) per datapoint by BBVI")
    # BBVI on the test points does far better than the (untrained) encoder would
    untrained = elbo_terms(run.model, run.data("test"))["elbo"].mean().item()
    assert summary["test"]["elbo"] > untrained + 1.0, (summary["test"]["elbo"], untrained)
    assert "reconstructions.png" not in summary["pictures"]  # it would use the encoder
    meta = json.loads((tmp_path / "mf" / "meta.json").read_text())
    assert meta["train_size"] == 64


def test_mean_field_e_step_touches_only_the_batch():
    lg = LinearGaussian(posterior="gaussian")
    x = lg.sample_x(10)
    config = tiny_config("unused", "train.inference='mean-field'", "train.mean_field_steps=3")
    mode = MeanField(config, lg.model, build_objective(ObjectiveConfig()), 10)
    mode.table.params.data = mode.table.params.data.double()
    before = mode.table.params.detach().clone()
    idx = torch.tensor([2, 5, 7])
    mode.step_fn(lambda b: b)((idx, x[idx]), Progress(step=0, epoch=0.0))
    changed = (mode.table.params.detach() != before).any(1)
    assert changed.nonzero().flatten().tolist() == [2, 5, 7]


def test_mode_errors_name_the_fix(data, tmp_path):
    with pytest.raises(ConfigError, match="data.train_limit=50.*train.inference=amortized"):
        fit(tiny_config(data, "train.inference='mean-field'", "train.mean_field_max=50"),
            out=tmp_path / "a", pictures=False)
    assert not (tmp_path / "a").exists()  # a bad config leaves no run folder
    with pytest.raises(ConfigError, match="train.inference='lazy': must be one of 'amortized'"):
        fit(tiny_config(data, "train.inference='lazy'"), out=tmp_path / "b", pictures=False)
    with pytest.raises(ConfigError, match="train.refine_steps=0: must be an integer >= 1"):
        fit(tiny_config(data, "train.inference='semi-amortized'", "train.refine_steps=0"),
            out=tmp_path / "c", pictures=False)
    with pytest.raises(ConfigError, match="train.compile=false or train.refine_through=false"):
        fit(tiny_config(data, "train.inference='semi-amortized'", "train.refine_through=true",
                        "train.compile=true"), out=tmp_path / "e", pictures=False)
    with pytest.raises(ConfigError, match="data.train_limit=1000"):
        fit(tiny_config(data, "data.train_limit=1000"), out=tmp_path / "d", pictures=False)


# -- vaelab gap ----------------------------------------------------------------------------

def test_gap_command_reports_consistent_gaps(amortized_run, tmp_path, capsys):
    out = tmp_path / "gap"
    args = ["gap", str(amortized_run), "--n", "30", "--steps", "60", "--iw-samples", "50",
            "--eval-samples", "20", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (out / "gap.png").is_file() and (out / "gap.json").is_file()
    assert r["n"] == 30
    # paired differences: the gap means are exactly the differences of the means
    assert r["amortization_gap"]["mean"] == pytest.approx(
        r["optimised_elbo"]["mean"] - r["amortized_elbo"]["mean"], abs=1e-9)
    assert r["approximation_gap"]["mean"] == pytest.approx(
        r["log_likelihood"]["mean"] - r["optimised_elbo"]["mean"], abs=1e-9)
    assert r["amortization_gap"]["stderr"] > 0
    assert len(r["curves"]["encoder"]) == len(r["curves"]["prior"]) == 61
    assert set(r["steps_to_reach"]["encoder"]) == set(r["steps_to_reach"]["targets"])
    assert main([*args[:-2], "--out", str(tmp_path / "text")]) == 0
    printed = capsys.readouterr().out
    assert "amortization gap" in printed and "approximation gap" in printed


def test_gap_command_errors(amortized_run, tmp_path, capsys, monkeypatch, data):
    assert main(["gap", str(amortized_run), "--n", "41"]) == 2
    assert "--n 41 is larger than the test split (40 datapoints); pass --n 40 or less" in \
        capsys.readouterr().err
    assert main(["gap", str(amortized_run), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err

    class SharedScale(DiagonalGaussian):
        """A posterior with a parameter shared by every datapoint."""

        def __init__(self, dim: int, num_classes: int = 0):
            super().__init__(dim)
            self.log_scale = torch.nn.Parameter(torch.zeros(dim))

    monkeypatch.setitem(FAMILIES, "gaussian", SharedScale)
    out = tmp_path / "shared"
    fit(tiny_config(data), out=out, pictures=False)
    assert main(["gap", str(out), "--n", "5"]) == 2
    err = capsys.readouterr().err
    assert "shared by all datapoints (log_scale)" in err and "per-datapoint table" in err


def test_backprop_through_refinement_is_exact_on_the_fast_linear_layers(monkeypatch):
    """Semi-amortized training with refine_through differentiates a gradient (double
    backward); the oneDNN linear layers must give the same result as plain F.linear."""
    from vaelab.build import build_model
    from vaelab.config import ModelConfig
    from vaelab.models import fastlinear

    if not fastlinear.ENABLED:
        pytest.skip("the oneDNN linear path is not available here")
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=[16], likelihood="gaussian"), (12,))
    x = torch.randn(6, 12)
    objective = build_objective(ObjectiveConfig())
    step = SemiAmortized(sa_config(True, steps=2), model, objective).step_fn(lambda b: b)

    def grads():
        torch.manual_seed(1)
        model.zero_grad()
        step(x, Progress(step=0, epoch=0.0))[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    fast = grads()
    monkeypatch.setattr(fastlinear, "ENABLED", False)
    for a, b in zip(fast, grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gap_command_on_a_discrete_latent_uses_the_score_function(data, tmp_path, capsys):
    out = tmp_path / "categorical"
    fit(tiny_config(data, "model.latent='categorical'", "model.num_classes=3"), out=out,
        pictures=False)
    assert main(["gap", str(out), "--n", "10", "--steps", "20", "--iw-samples", "20",
                 "--eval-samples", "10", "--no-prior", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings"]["gradient_samples"] == 8 and "prior" not in r["curves"]
    assert torch.isfinite(torch.tensor([r["amortization_gap"]["mean"],
                                        r["approximation_gap"]["mean"]])).all()
