"""The seeded train/valid/test split of a single-array file (data/splits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vaelab.build import validate
from vaelab.config import ConfigError, load_config
from vaelab.data import DataError
from vaelab.data.splits import split_rows, split_sizes


def test_splits_partition_the_rows_in_the_configured_shares() -> None:
    rows = {s: split_rows(1003, s, [0.8, 0.1, 0.1], seed=5) for s in ("train", "valid", "test")}
    assert [len(r) for r in rows.values()] == [803, 100, 100]
    together = np.concatenate(list(rows.values()))
    assert np.array_equal(np.sort(together), np.arange(1003))  # each row in exactly one split
    assert all(np.all(np.diff(r) > 0) for r in rows.values())  # sorted: memmaps read forwards
    both = split_rows(1003, "train+valid", [0.8, 0.1, 0.1], seed=5)
    assert np.array_equal(both, np.sort(np.concatenate([rows["train"], rows["valid"]])))
    assert np.array_equal(split_rows(1003, "all", [0.8, 0.1, 0.1], seed=5), np.arange(1003))


def test_split_is_seeded_and_shuffled() -> None:
    a = split_rows(500, "test", [0.6, 0.2, 0.2], seed=1)
    assert np.array_equal(a, split_rows(500, "test", [0.6, 0.2, 0.2], seed=1))
    assert not np.array_equal(a, split_rows(500, "test", [0.6, 0.2, 0.2], seed=2))
    # not a block of consecutive rows: spread over the file
    assert a.min() < 100 and a.max() > 400


def test_share_zero_gives_no_rows_and_an_empty_split_is_refused() -> None:
    assert split_sizes(10, [0.9, 0.1, 0.0]) == (9, 1, 0)
    with pytest.raises(DataError, match=r"the test split is empty .* set its data.\*_split"):
        split_rows(10, "test", [0.9, 0.1, 0.0], seed=0)
    with pytest.raises(DataError, match=r"3 rows give the valid split .* no row"):
        split_sizes(3, [0.8, 0.1, 0.1])


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.8, 0.1, 0.2], [0.0, 0.5, 0.5]])
def test_bad_fractions_fail_in_validate_before_any_data(fractions: list[float]) -> None:
    config = load_config(None, [f"data.split_fractions={fractions}"])
    with pytest.raises(ConfigError, match=r"data.split_fractions=.* three shares"):
        validate(config)
