"""Data parallel training: a 2-process gloo run equals a 1-process run with the same global
batch and seed; the sharded noise is exactly the one-process noise; resume checks the
world size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    RelaxedOneHotCategorical,
)

from vaelab import rng
from vaelab.api import fit
from vaelab.config import load_config
from vaelab.rng import Shard, bernoulli, draw, sharded
from vaelab.training import distributed
from vaelab.training.runs import RunDir, RunError, load_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")

B, D, K = 6, 5, 3
_g = torch.Generator().manual_seed(0)
LOC = torch.randn(B, D, generator=_g)
SCALE = torch.rand(B, D, generator=_g) + 0.5
TRIL = torch.randn(B, D, D, generator=_g).tril() + 3 * torch.eye(D)
LOGITS = torch.randn(B, D, 4, generator=_g)

FAMILIES = {  # name: (rows -> q over those datapoints, reparameterized?)
    "normal": (lambda r: Independent(Normal(LOC[r], SCALE[r]), 1), True),
    "full-covariance": (lambda r: MultivariateNormal(LOC[r], scale_tril=TRIL[r]), True),
    "relaxed-categorical": (lambda r: Independent(RelaxedOneHotCategorical(
        torch.tensor(0.5), logits=LOGITS[r]), 1), True),
    "one-hot-categorical": (lambda r: Independent(OneHotCategorical(logits=LOGITS[r]), 1),
                            False),
    "categorical": (lambda r: Independent(Categorical(logits=LOGITS[r]), 1), False),
    "bernoulli": (lambda r: Independent(Bernoulli(logits=LOC[r]), 1), False),
}


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_sharded_draw_is_the_one_process_draw(family, world):
    make, reparam = FAMILIES[family]
    torch.manual_seed(1)
    full = draw(make(slice(None)), (K,), reparam=reparam)  # (K, B, ...)
    state_after = torch.get_rng_state()
    for rank in range(world):
        shard = Shard(rank, world)
        torch.manual_seed(1)
        with sharded(shard):
            local = draw(make(shard.rows(B)), (K,), reparam=reparam)
        assert torch.equal(local, full[:, shard.rows(B)])
        assert torch.equal(torch.get_rng_state(), state_after)  # ranks stay in step


@pytest.mark.parametrize("world", [1, 2, 3])
def test_standard_normal_is_the_noise_of_draw(world):
    """The fused ELBO's noise (rng.standard_normal) is a unit Normal's draw, per rank."""
    unit = Normal(torch.zeros(B // world * world, D), torch.ones(B // world * world, D))
    torch.manual_seed(1)
    full = draw(unit, (1,))[0]
    for rank in range(world):
        shard = Shard(rank, world)
        torch.manual_seed(1)
        with sharded(shard):
            local = rng.standard_normal(B // world, D)
        assert torch.equal(local, full[shard.rows(B // world * world)])


def test_sharded_draw_keeps_the_pathwise_gradient():
    loc = LOC.clone().requires_grad_()
    with sharded(Shard(1, 2)):
        z = draw(Independent(Normal(loc[3:], SCALE[3:]), 1), (2,))
    z.sum().backward()
    assert torch.equal(loc.grad[3:], torch.full((3, D), 2.0))  # dz/dloc = 1 per sample
    assert torch.equal(loc.grad[:3], torch.zeros(3, D))


def test_sharded_bernoulli_is_the_one_process_binarization():
    p = torch.rand(8, 1, 3, 3, generator=_g)
    torch.manual_seed(2)
    full = torch.bernoulli(p)
    for rank in range(2):
        shard = Shard(rank, 2)
        torch.manual_seed(2)
        with sharded(shard):
            assert torch.equal(bernoulli(p[shard.rows(8)]), full[shard.rows(8)])


def test_uneven_split_is_refused():
    with pytest.raises(ValueError, match="cannot be split evenly"):
        Shard(0, 2).rows(7)


def test_single_process_context():
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.on_main(lambda: 7) == 7
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t


def tiny_data(path: Path) -> Path:
    rng = np.random.default_rng(3)

    def images(n: int) -> np.ndarray:
        return (rng.random((n, 1, 6, 6)) * 255).astype(np.uint8)

    # 68 rows, global batch 16: the last batch of 4 splits 2 + 2
    np.savez(path, x_train=images(68), x_valid=images(12), x_test=images(12))
    return path


def settings(data: Path, samples: int = 2) -> list[str]:
    values = {"data.name": str(data), "model.hidden": "[8]", "model.latent_dim": 2,
              "objective.samples": samples, "train.batch_size": 16, "train.epochs": 2,
              "train.threads": 1, "train.progress": "false", "eval.iw_samples": 4,
              # mid-epoch checkpoints: the ranks' partial metric sums are merged there
              "train.checkpoint_every_steps": 3}
    return [f"{k}={v}" for k, v in values.items()]


def train_two_processes(out: Path, sets: list[str]) -> Path:
    """`vaelab train --nproc 2` with ``sets`` into ``out`` (gloo on the CPU)."""
    env = dict(os.environ, PYTHONPATH=SRC)
    command = [sys.executable, "-m", "vaelab", "train", "--nproc", "2", "--out", str(out),
               "--no-progress", *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("samples", [2, 1], ids=["K=2", "K=1-fused-elbo"])
def test_two_process_gloo_run_equals_one_process_run(tmp_path, one_thread, samples):
    """Dynamic binarization and sampled z included: each rank draws the global batch's
    noise and keeps its slice, so the runs agree up to float summation order. K=1 trains
    through the fused ELBO (fused_elbo.py), whose gradients DDP must average too."""
    data = tiny_data(tmp_path / "tiny.npz")
    sets = settings(data, samples)
    two = train_two_processes(tmp_path / "two", sets)
    one = tmp_path / "one"
    fit(load_config(overrides=sets), out=one, pictures=False)

    a = load_checkpoint(one / "checkpoints/last.pt")
    b = load_checkpoint(two / "checkpoints/last.pt")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["trainer"]["step"] == b["trainer"]["step"] == 10
    init = fit_init_params(sets)
    for key, value in a["model"].items():
        if key in init and value.dtype.is_floating_point:
            # training moved the weights far more than the two runs differ
            assert (value - init[key]).abs().max() > 1e-3 or value.numel() < 4, key
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=2e-6)
    ra, rb = RunDir(one).read_metrics(), RunDir(two).read_metrics()
    assert [r["epoch"] for r in rb] == [1, 2]  # one record per epoch: only rank 0 wrote
    for x, y in zip(ra, rb, strict=True):  # metrics summed over both ranks
        for key in ("train_bound", "train_rec", "train_kl", "val_bound"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), key

    before = {p: p.read_bytes() for p in two.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match=r"2-process run.*1 process.*--nproc 2"):
        fit(load_config(), resume=two, pictures=False)
    assert {p: p.read_bytes() for p in two.rglob("*") if p.is_file()} == before


def fit_init_params(sets: list[str]) -> dict[str, torch.Tensor]:
    """The model's parameters at initialisation (same seed as the runs)."""
    from vaelab.build import build_model
    from vaelab.data.prepare import load_split
    from vaelab.rng import seed_everything

    config = load_config(overrides=sets)
    seed_everything(config.train.seed)
    train = load_split(config, "train")
    model = build_model(config.model, train.event_shape, data_mean=train.x.mean(0),
                        data_x=train.x)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
