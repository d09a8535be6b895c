"""The evaluator's fused importance weights (evaluation/fused_weights.py) against the
general path's distribution objects: same draws, same weights, same log-likelihoods."""

from __future__ import annotations

import pytest
import torch

from vaelab.build import build_model
from vaelab.config import ModelConfig
from vaelab.evaluation.evaluate import importance_log_likelihood
from vaelab.evaluation.fused_weights import decoder_log_prob, decoder_plan, fused_log_weights
from vaelab.inference.fused_elbo import fused_plan
from vaelab.models import fastlinear

EVENT = (1, 6, 6)


def make(activation: str = "tanh", matmul: str = "onednn", hidden: tuple[int, ...] = (16, 8),
         **model):
    torch.manual_seed(0)
    m = build_model(ModelConfig(latent_dim=3, hidden=list(hidden), activation=activation,
                                **model), EVENT).eval()
    fastlinear.set_matmul(m, matmul)
    return m


def data(n: int = 7, binary: bool = True) -> torch.Tensor:
    u = torch.rand(n, *EVENT, generator=torch.Generator().manual_seed(1))
    return (u < 0.4).float() if binary else u


def assert_same_with_fused_on_and_off(model, x: torch.Tensor, **chunks) -> None:
    """importance_log_likelihood with fused=True and fused=False from the same seed: the
    same draws, so the same values to float32 rounding."""
    runs = {}
    for fused in (True, False):
        torch.manual_seed(3)
        runs[fused] = importance_log_likelihood(model, x, fused=fused, **chunks)
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "grey"])
def test_fused_weights_equal_the_distribution_objects(activation, matmul, binary):
    model, x = make(activation, matmul), data(binary=binary)
    plan = fused_plan(model)
    assert plan is not None
    with torch.no_grad():
        q = model.encode(x)
        torch.manual_seed(5)
        z = q.sample((11,))
        general = model.decode(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
        torch.manual_seed(5)  # the same draws
        fused = fused_log_weights(plan, x, 11, q.base_dist.loc, q.base_dist.scale)
    assert fused.shape == general.shape == (11, 7)
    torch.testing.assert_close(fused, general, rtol=1e-5, atol=1e-4)


def test_the_log_likelihood_is_the_same_with_the_fused_weights_on_or_off():
    model, x = make(), data(25)
    assert_same_with_fused_on_and_off(model, x, samples=70, batch_size=10,
                                      sample_chunk=30)


@pytest.mark.parametrize("change", [{"prior": "mixture"}, {"likelihood": "gaussian"},
                                    {"latent": "gaussian-full"}])
def test_other_models_keep_the_general_path(change):
    model = make(**change)
    assert fused_plan(model) is None  # so importance_log_likelihood draws as before


@pytest.mark.parametrize("change", [
    {"prior": "mixture"}, {"prior": "vamp"}, {"latent": "gaussian-full"},
    {"latent": "bernoulli"}, {"latent": "categorical", "num_classes": 4}],
    ids=["mixture", "vamp", "full-covariance", "bernoulli-codes", "categorical-codes"])
@pytest.mark.parametrize("matmul", ["onednn", "torch"])
def test_other_latents_and_priors_get_the_decoders_log_prob_with_the_same_value(change, matmul):
    model, x = make(matmul=matmul, **change), data(25)
    assert fused_plan(model) is None and decoder_plan(model) is not None
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((11,))
        torch.testing.assert_close(decoder_log_prob(decoder_plan(model), model, z, x),
                                   model.decode(z).log_prob(x), rtol=1e-5, atol=1e-4)
    assert_same_with_fused_on_and_off(model, x, samples=70, batch_size=10,
                                      sample_chunk=30)


@pytest.mark.parametrize("change", [{"likelihood": "gaussian"},
                                    {"likelihood": "continuous-bernoulli"}])
def test_other_likelihoods_keep_the_distribution_objects(change):
    assert decoder_plan(make(**change)) is None


def test_a_model_that_redefines_decode_keeps_it():
    from vaelab.models.vae import VAE

    class Tempered(VAE):
        def decode(self, z):
            return super().decode(z / 2)

    m = make(prior="mixture")
    tempered = Tempered(m.encoder, m.posterior, m.prior_module, m.decoder, m.likelihood)
    assert decoder_plan(tempered) is None


@pytest.mark.parametrize("block_rows", [1, 7, 30])
@pytest.mark.parametrize("change", [{}, {"prior": "mixture"}], ids=["normal", "mixture"])
def test_decoding_a_chunk_in_row_blocks_changes_no_weight(block_rows, change, monkeypatch):
    from vaelab.evaluation import fused_weights

    model, x = make(**change), data(10)
    runs = {}
    for rows in (block_rows, 10**9):
        monkeypatch.setattr(fused_weights, "BLOCK_ROWS", rows)
        torch.manual_seed(3)
        runs[rows] = importance_log_likelihood(model, x, samples=40, batch_size=5,
                                               sample_chunk=13, fused=True)
    torch.manual_seed(3)
    general = importance_log_likelihood(model, x, samples=40, batch_size=5, sample_chunk=13,
                                        fused=False)
    torch.testing.assert_close(runs[block_rows], runs[10**9], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(runs[block_rows], general, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model_cfg", [
    {"latent_layers": [4, 3], "inference": "bottom-up"},
    {"latent_layers": [4, 3], "inference": "top-down"},
    {"conditional": True, "label_classes": 3}], ids=["bottom-up", "top-down", "conditional"])
@pytest.mark.parametrize("labels", [True, False], ids=["labelled", "unlabelled"])
def test_hierarchies_get_the_decoders_log_prob_with_the_same_value(model_cfg, labels):
    model = make(**model_cfg)
    assert decoder_plan(model) is not None
    x = data(12)
    if labels and model_cfg.get("conditional"):
        x = torch.cat([x.flatten(1), torch.eye(3)[torch.arange(12) % 3]], 1)  # (B, D + C)
    assert_same_with_fused_on_and_off(model, x, samples=60, batch_size=5,
                                      sample_chunk=25)


def test_a_hierarchy_with_a_conv_decoder_keeps_the_distribution_objects():
    model = make(latent_layers=[4, 3], encoder="conv", decoder="conv", hidden=())
    assert decoder_plan(model) is None
