"""Minibatching and binarization: coverage, resumption, and the statistics of the draws."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.data import DataError, binarize, fixed_binarization, iterate_minibatches
from vaelab.data.hashing import splitmix64, uniforms

# SplitMix64 seeded with 1234567: the reference outputs (Rosetta Code, "Splitmix64").
SPLITMIX_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                    4593380528125082431, 16408922859458223821]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- iterate_minibatches -------------------------------------------------------------------

@pytest.mark.parametrize("drop_last", [False, True])
def test_one_epoch_covers_every_index_exactly_once(drop_last: bool) -> None:
    x = torch.randn(103, 2, 3, generator=gen(0))
    pairs = list(iterate_minibatches(x, 10, generator=gen(1), drop_last=drop_last,
                                     return_indices=True))
    sizes = [len(idx) for idx, _ in pairs]
    assert sizes == ([10] * 10 if drop_last else [10] * 10 + [3])
    seen = torch.cat([idx for idx, _ in pairs])
    assert seen.dtype == torch.int64 and len(set(seen.tolist())) == len(seen)
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(103))
    for idx, xb in pairs:
        assert torch.equal(xb, x[idx])


def test_batches_without_indices_and_successive_epochs_differ() -> None:
    x = torch.arange(20.0).unsqueeze(1)
    g = gen(0)
    first = torch.cat(list(iterate_minibatches(x, 6, generator=g)))
    second = torch.cat(list(iterate_minibatches(x, 6, generator=g)))
    assert sorted(first.flatten().tolist()) == sorted(second.flatten().tolist())
    assert not torch.equal(first, second)


def test_start_resumes_the_epoch_where_it_stopped() -> None:
    x = torch.randn(50, 4, generator=gen(0))
    g = gen(7)
    epoch_start = g.get_state()
    full = list(iterate_minibatches(x, 7, generator=g, return_indices=True))
    resumed_gen = torch.Generator()
    resumed_gen.set_state(epoch_start)
    rest = list(iterate_minibatches(x, 7, generator=resumed_gen, start=4, return_indices=True))
    assert len(rest) == len(full) - 4 == 4
    for (i1, x1), (i2, x2) in zip(full[4:], rest, strict=True):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)
    assert torch.equal(g.get_state(), resumed_gen.get_state())
    assert list(iterate_minibatches(x, 7, generator=gen(0), start=8)) == []


def test_permutation_is_drawn_when_called_not_when_consumed() -> None:
    g = gen(3)
    before = g.get_state()
    batches = iterate_minibatches(torch.zeros(10, 1), 3, generator=g)
    assert not torch.equal(before, g.get_state())
    del batches


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"batch_size": True}, "batch_size must be a positive integer, got True"),
    ({"batch_size": 3, "start": -1}, r"start=-1 is outside this epoch's 4 batches"),
    ({"batch_size": 3, "start": 4, "drop_last": True}, r"outside this epoch's 3 batches"),
])
def test_bad_batching_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        iterate_minibatches(torch.zeros(10, 1), generator=gen(0), **kwargs)


# ---- binarization --------------------------------------------------------------------------

def test_dynamic_binarization_mean_matches_x_within_standard_errors() -> None:
    p = torch.linspace(0, 1, 101)
    k = 4000
    draws = binarize(p.expand(k, -1), generator=gen(0))  # (k, 101)
    assert draws.dtype == torch.float32 and set(draws.unique().tolist()) <= {0.0, 1.0}
    mean = draws.mean(0)
    se = (p * (1 - p) / k).sqrt()
    assert torch.all((mean - p).abs() <= 5 * se + 1e-12)  # exact at p = 0 and p = 1
    z2 = ((mean - p)[1:-1] / se[1:-1]) ** 2  # ~ chi-square with 99 degrees of freedom
    assert abs(z2.mean().item() - 1) < 5 * math.sqrt(2 / 99)


def test_dynamic_binarization_draws_fresh_samples_and_keeps_shape() -> None:
    x = torch.full((8, 1, 5, 5), 0.5)
    g = gen(0)
    a, b = binarize(x, g), binarize(x, g)
    assert a.shape == x.shape and not torch.equal(a, b)
    assert torch.equal(binarize(x, gen(1)), binarize(x, gen(1)))


def test_binarize_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(DataError, match=r"binarize input has values in \[0, 1\.5\]"):
        binarize(torch.tensor([0.0, 1.5]))


def test_fixed_binarization_is_deterministic_per_seed_and_unbiased() -> None:
    x = torch.rand(64, 1, 28, 28, generator=gen(0))
    a = fixed_binarization(x, seed=3)
    assert torch.equal(a, fixed_binarization(x.clone(), seed=3))
    assert not torch.equal(a, fixed_binarization(x, seed=4))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert set(a.unique().tolist()) == {0.0, 1.0}
    se = (x * (1 - x)).sum().sqrt() / x.numel()
    assert abs(a.mean() - x.mean()) <= 5 * se
    assert torch.equal(fixed_binarization(torch.zeros(3, 4), 0), torch.zeros(3, 4))
    assert torch.equal(fixed_binarization(torch.ones(3, 4), 0), torch.ones(3, 4))


def test_fixed_binarization_follows_the_splitmix64_reference_stream() -> None:
    assert splitmix64(1234567, 5).tolist() == SPLITMIX_1234567
    assert splitmix64(0, 1).tolist() == [0xE220A8397B1DCDAF]
    assert splitmix64(-1, 2).tolist() == [0xE4D971771B652C20, 0xE99FF867DBF682C9]
    u = [(v >> 11) * 2.0**-53 for v in SPLITMIX_1234567]
    assert uniforms(1234567, 5).tolist() == u
    bits = fixed_binarization(torch.full((5,), 0.5), seed=1234567)
    assert bits.tolist() == [float(ui < 0.5) for ui in u] == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_fixed_binarization_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(DataError, match="fixed_binarization input has values in"):
        fixed_binarization(torch.tensor([-0.1, 0.5]), seed=0)
