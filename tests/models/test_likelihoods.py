"""Likelihoods beyond Bernoulli/Gaussian against exact computations.

* discretized logistic (logistic-256): the 256 probabilities sum to one (exact enumeration),
  log_prob equals a direct CDF difference in float64, stays finite in the tails, samples lie
  on the grid with the right mean;
* continuous Bernoulli: its density integrates to one on [0, 1] (quadrature);
* wiring: bits/dim in the evaluation report, raw (not binarized) data for both, and a clear
  error for logistic-256 on data that are not 8-bit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import expit

from vaelab.api import fit
from vaelab.build import build_model
from vaelab.config import Config, ConfigError, ModelConfig, load_config
from vaelab.data.prepare import load_split, prepare_eval_x, uses_binarization
from vaelab.evaluation.evaluate import evaluate
from vaelab.models.discretized import DiscretizedLogistic, log_sigmoid_difference
from vaelab.models.likelihoods import build_likelihood

D64 = torch.float64
LEVELS = torch.linspace(0, 1, 256, dtype=D64)
PARAMS = [(0.3, -1.0), (0.0, -7.0), (1.0, -7.0), (0.5, -5.5), (-4.0, 0.0), (5.0, -2.0),
          (0.5, 3.0), (0.77, -9.0), (0.123, -4.0)]



def table() -> DiscretizedLogistic:
    loc, log_scale = (torch.tensor(v, dtype=D64) for v in zip(*PARAMS, strict=True))
    return DiscretizedLogistic(loc, log_scale)


def test_discretized_logistic_probabilities_sum_to_one():
    probs = table().log_prob(LEVELS.view(-1, 1)).exp()  # (256, P)
    torch.testing.assert_close(probs.sum(0), torch.ones(len(PARAMS), dtype=D64),
                               rtol=0, atol=1e-12)
    assert (probs >= 0).all()


def test_discretized_logistic_log_prob_is_the_cdf_difference():
    """Against a direct float64 computation: F(x + h) - F(x - h), tails at the edges."""
    d = table()
    h = 0.5 / 255
    for i, (mu, log_s) in enumerate(PARAMS):
        s = math.exp(max(log_s, -7.0))
        x = LEVELS.numpy()
        # CDF difference below the location, survival difference above it: either way the
        # two terms are small there, so the subtraction keeps its digits
        cdf = np.where(x > 1 - h, 1.0, expit((x + h - mu) / s)) \
            - np.where(x < h, 0.0, expit((x - h - mu) / s))
        survival = np.where(x < h, 1.0, expit(-(x - h - mu) / s)) \
            - np.where(x > 1 - h, 0.0, expit(-(x + h - mu) / s))
        direct = np.where(x < mu, cdf, survival)
        mask = direct > 1e-250  # not underflowed
        ours = d.log_prob(LEVELS.view(-1, 1))[:, i].exp().numpy()
        np.testing.assert_allclose(ours[mask], direct[mask], rtol=1e-7, atol=1e-300)


def test_discretized_logistic_is_finite_far_in_the_tails_in_float32():
    loc = torch.tensor([-30.0, 30.0, 0.5, 0.5], requires_grad=True)
    log_scale = torch.tensor([-7.0, -7.0, -7.0, 10.0], requires_grad=True)
    d = DiscretizedLogistic(loc, log_scale)
    x = torch.tensor([1.0, 0.0, 0.0, 128 / 255])
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()
    # deep in the tail the log-probability is the logistic's log-density tail, not -inf
    assert lp[0] < -1e3 and lp[2] < -100


def test_log_sigmoid_difference_matches_naive_where_that_is_accurate():
    a = torch.tensor([0.3, 2.0, -1.0, 5.0], dtype=D64)
    b = torch.tensor([0.1, -3.0, -1.5, 4.999], dtype=D64)
    naive = torch.log(torch.sigmoid(a) - torch.sigmoid(b))
    torch.testing.assert_close(log_sigmoid_difference(a, b), naive, rtol=1e-9, atol=0)


def test_discretized_logistic_mean_variance_and_samples():
    d = table()
    probs = d.log_prob(LEVELS.view(-1, 1)).exp()
    mean = (probs * LEVELS.view(-1, 1)).sum(0)
    torch.testing.assert_close(d.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.variance, (probs * LEVELS.view(-1, 1) ** 2).sum(0) - mean**2,
                               rtol=1e-8, atol=1e-12)
    torch.manual_seed(0)
    x = d.sample((20000,))
    assert d.support.check(x).all()
    stderr = d.variance.sqrt() / math.sqrt(x.shape[0])
    assert ((x.mean(0) - d.mean).abs() <= 4 * stderr + 1e-12).all()


def test_discretized_logistic_rejects_values_off_the_grid():
    d = DiscretizedLogistic(torch.tensor([0.5]), torch.tensor([-2.0]), validate_args=True)
    d.log_prob(torch.tensor([3 / 255]))
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([0.5 / 255]))


@pytest.mark.parametrize("logit", [-8.0, -2.0, -1e-4, 0.0, 1e-3, 0.5, 6.0])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    lik = build_likelihood("continuous-bernoulli", (1,))
    px = lik(torch.full((1, 1), logit, dtype=D64))  # decoder output (B=1, k=1, D=1)

    def density(x: float) -> float:
        return px.log_prob(torch.tensor([[x]], dtype=D64)).exp().item()

    total, _ = integrate.quad(density, 0, 1, epsabs=1e-11)
    mean, _ = integrate.quad(lambda x: x * density(x), 0, 1, epsabs=1e-11)
    assert abs(total - 1) < 1e-6
    assert abs(mean - px.mean.item()) < 1e-6


def test_likelihood_objects_from_decoder_output():
    torch.manual_seed(0)
    out = torch.randn(4, 2, 1, 3, 3)  # (B, k=2, *event)
    px = build_likelihood("logistic-256", (1, 3, 3))(out)
    assert px.batch_shape == (4,) and px.event_shape == (1, 3, 3)
    x = torch.randint(0, 256, (4, 1, 3, 3)) / 255
    assert px.log_prob(x).shape == (4,)
    model = build_model(ModelConfig(likelihood="logistic-256", hidden=[8], latent_dim=2),
                        (1, 3, 3))
    assert model.decoder.k == 2
    cb = build_model(ModelConfig(likelihood="continuous-bernoulli", hidden=[8], latent_dim=2),
                     (1, 3, 3))
    assert cb.decode(torch.zeros(5, 2)).mean.shape == (5, 1, 3, 3)


def test_bits_per_dim_reported_for_discrete_likelihoods_only():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (20, 6)) / 255
    for name, expected in (("logistic-256", True), ("bernoulli", True),
                           ("continuous-bernoulli", False), ("gaussian", False)):
        model = build_model(ModelConfig(likelihood=name, hidden=[8], latent_dim=2), (6,))
        data = torch.bernoulli(x) if name == "bernoulli" else x
        report = evaluate(model, data, iw_samples=10)
        assert ("bits_per_dim" in report) is expected, name
        if expected:
            assert report["bits_per_dim"] == pytest.approx(report["nll"] / (6 * math.log(2)))


def test_only_bernoulli_data_are_binarized():
    for name in ("continuous-bernoulli", "logistic-256", "gaussian"):
        cfg = load_config(overrides=[f"model.likelihood={name}"])
        assert not uses_binarization(cfg)
    assert uses_binarization(Config())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    splits = {f"x_{s}": rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
              for s, n in (("train", 64), ("valid", 16), ("test", 16))}
    np.savez(folder / "u8.npz", **splits)
    np.savez(folder / "float.npz", **{k: v.astype(np.float32) / 255.5 for k, v in splits.items()})
    return folder


def tiny_config(path, likelihood: str):
    return load_config(overrides=[f"data.name='{path}'", f"model.likelihood={likelihood}",
                                  "model.hidden=[8]", "model.latent_dim=2", "train.epochs=1",
                                  "train.batch_size=32", "train.progress=false",
                                  "eval.iw_samples=5"])


def test_logistic_256_on_data_that_are_not_8bit_is_a_config_error(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data / "float.npz", "logistic-256")
    with pytest.raises(ConfigError, match="not 8-bit.*model.likelihood=continuous-bernoulli"):
        fit(cfg, out=tmp_path / "run", pictures=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("likelihood", ["logistic-256", "continuous-bernoulli"])
def test_training_on_raw_8bit_data(tiny_data, tmp_path, likelihood):
    cfg = tiny_config(tiny_data / "u8.npz", likelihood)
    run = fit(cfg, out=tmp_path / "run", pictures=False)
    raw = load_split(cfg, "test")
    assert torch.equal(run.data("test"), raw.x)  # evaluated as given, not binarized
    assert torch.equal(prepare_eval_x(cfg, raw), raw.x)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["objective_audit"]["output_range"]["status"] == "ok"
    assert ("bits_per_dim" in summary["test"]) is (likelihood == "logistic-256")


@pytest.mark.parametrize("std", [0.1, 1e-3, 0.7, 3.0])
def test_fixed_gaussian_std_is_exactly_the_configured_value(std):
    """No softplus floor added: sigma is the configured number, to the last bit (in the
    model's float32), and log p(x|z) is Normal(mu, std)'s own."""
    lik = build_likelihood("gaussian", (3,), variance="fixed", std=std)
    out = torch.randn(5, 1, 3)
    px = lik(out)
    assert torch.equal(px.base_dist.scale, torch.full((5, 3), std))
    x = torch.randn(5, 3)
    expected = torch.distributions.Normal(out.squeeze(1), torch.tensor(std)).log_prob(x).sum(-1)
    assert torch.equal(px.log_prob(x), expected)
    assert "std" not in lik.state_dict() and not list(lik.parameters())


@pytest.mark.parametrize("variance", ["shared", "pixel"])
def test_learned_gaussian_std_starts_at_the_configured_value(variance):
    lik = build_likelihood("gaussian", (3,), variance=variance, std=0.1)
    scale = lik(torch.zeros(2, 1, 3)).base_dist.scale
    torch.testing.assert_close(scale, torch.full((2, 3), 0.1), rtol=1e-6, atol=0)


def test_checkpoint_from_before_the_exact_std_still_loads():
    """Older checkpoints hold the fixed std as a raw_std buffer; it is ignored (the config
    gives the std)."""
    lik = build_likelihood("gaussian", (3,), variance="fixed", std=0.1)
    lik.load_state_dict({"raw_std": torch.tensor(-2.25)})
    assert torch.equal(lik.std, torch.tensor(0.1))
