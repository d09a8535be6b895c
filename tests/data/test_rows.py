"""Row stores (data/rows.py) and .npy sources (data/npy.py): batches equal the rows asked for,
in their order; memory-mapped reads go forwards through the files; statistics and static
binarization equal their whole-array versions; bad files and Dataset items are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab.config import ConfigError, load_config
from vaelab.data import DataError, fixed_binarization, iterate_minibatches
from vaelab.data.dataset import make_dataset, to_unit
from vaelab.data.npy import is_npy_source, open_npy, open_npy_rows
from vaelab.data.prepare import load_split
from vaelab.data.rows import (
    ArrayRows,
    DatasetRows,
    TensorRows,
    as_rows,
    release_pages,
    static_binarization,
)
from vaelab.data.splits import split_rows

FRACTIONS = [0.8, 0.1, 0.1]


def images(n: int, seed: int = 0, shape: tuple[int, ...] = (5, 4)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def reference(x: np.ndarray) -> torch.Tensor:
    """What vaelab stored before uint8 storage: numpy float32 k/255, channel axis added."""
    xf = x.astype(np.float32)
    xf /= 255
    return torch.from_numpy(xf[:, None] if xf.ndim == 3 else xf)


def test_to_unit_gives_the_float32_numbers_vaelab_stored_before():
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert torch.equal(to_unit(torch.from_numpy(every)), reference(every))
    f = torch.rand(3, 2)
    assert to_unit(f) is f


def test_uint8_dataset_keeps_uint8_and_converts_on_demand():
    x = images(10)
    data = make_dataset(x, None, name="n", split="all", source="s", what="w")
    assert data.values.dtype == torch.uint8 and data.is_8bit
    assert torch.equal(data.x, reference(x)) and data.x is data.x  # made once, kept
    assert len(data) == 10 and data.event_shape == (1, 5, 4) and "stored=uint8" in repr(data)


def test_tensor_rows_give_the_float32_batches_of_before():
    x = images(50)
    data = make_dataset(x, None, name="n", split="train", source="s", what="w")
    u8, f32 = TensorRows.of(data), TensorRows.of(data, float32=True)
    assert u8.values.dtype == torch.uint8 and f32.values.dtype == torch.float32
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:17]
    assert torch.equal(u8.gather(idx), reference(x)[idx])
    assert torch.equal(f32.gather(idx), reference(x)[idx])
    assert u8.rows_read == 17


def test_iterate_minibatches_over_a_store_equals_over_the_float_tensor():
    x = images(37)
    ref = reference(x)
    rows = ArrayRows([x[:20], x[20:]], None, name="n", split="train", source="s")
    a = list(iterate_minibatches(ref, 8, generator=torch.Generator().manual_seed(3),
                                 return_indices=True))
    b = list(iterate_minibatches(rows, 8, generator=torch.Generator().manual_seed(3),
                                 return_indices=True))
    for (ia, xa), (ib, xb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)


def test_plain_tensors_pass_through_unconverted():
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    rows = as_rows(x)
    assert torch.equal(rows.gather(torch.tensor([4, 1])), x[[4, 1]])


def test_shards_read_sorted_and_return_permutation_order(tmp_path):
    x = images(90)
    for k, (a, b) in enumerate([(0, 30), (30, 31), (31, 90)]):
        np.save(tmp_path / f"part-{k}.npy", x[a:b])
    store = open_npy(str(tmp_path), "all", fractions=FRACTIONS, seed=0)
    assert isinstance(store, ArrayRows) and len(store) == 90 and "3 files" in store.storage
    store.read_log = []
    idx = torch.tensor([89, 3, 30, 31, 0, 45, 29])
    assert torch.equal(store.gather(idx), reference(x)[idx])
    (read,) = store.read_log
    assert read.tolist() == sorted(idx.tolist())  # forwards through the files


def test_single_file_split_by_seed_without_copying(tmp_path):
    x = images(200)
    y = np.arange(200) % 7
    np.save(tmp_path / "faces.npy", x)
    np.save(tmp_path / "faces.labels.npy", y)
    path = str(tmp_path / "faces.npy")
    parts = {s: open_npy(path, s, fractions=FRACTIONS, seed=5) for s in ("train", "valid", "test")}
    assert [len(p) for p in parts.values()] == [160, 20, 20]
    for split, store in parts.items():
        rows = split_rows(200, split, FRACTIONS, 5)
        assert isinstance(store.arrays[0], np.memmap)  # mapped, not read
        assert torch.equal(store.gather(torch.arange(len(rows))), reference(x)[rows])
        assert torch.equal(store.y, torch.from_numpy(y[rows]))
    config = load_config(None, [f"data.name='{path}'", "data.split_seed=5"])
    test = load_split(config, "test")  # an evaluation split: read into memory, uint8
    rows = split_rows(200, "test", FRACTIONS, 5)
    assert test.values.dtype == torch.uint8 and torch.equal(test.x, reference(x)[rows])


def test_split_folders_and_storage_choices(tmp_path):
    x = images(30)
    (tmp_path / "train").mkdir()
    np.save(tmp_path / "train" / "a.npy", x[:10])
    np.save(tmp_path / "train" / "b.npy", x[10:20])
    np.save(tmp_path / "test.npy", x[20:])
    root = str(tmp_path)
    assert is_npy_source(root) and not is_npy_source(str(tmp_path / "train" / "missing"))
    train = open_npy(root, "train", fractions=FRACTIONS, seed=0)
    assert torch.equal(train.gather(torch.arange(20)), reference(x[:20]))
    assert len(open_npy(root, "all", fractions=FRACTIONS, seed=0)) == 30
    with pytest.raises(DataError, match=r"has no 'valid' split \(it holds train, test\)"):
        open_npy(root, "valid", fractions=FRACTIONS, seed=0)
    memory = open_npy_rows(root, "train", fractions=FRACTIONS, seed=0, storage="memory")
    f32 = open_npy_rows(root, "train", fractions=FRACTIONS, seed=0, storage="float32")
    assert (memory.values.dtype, f32.values.dtype) == (torch.uint8, torch.float32)
    assert torch.equal(memory.gather(torch.arange(20)), f32.gather(torch.arange(20)))


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: (np.save(d / "a.npy", images(3)), np.save(d / "b.npy", images(3, shape=(4, 4)))),
     r"b.npy holds uint8 rows of shape \(4, 4\), but .*a.npy holds uint8 \(5, 4\)"),
    (lambda d: (np.save(d / "a.npy", images(3)), np.save(d / "b.npy", images(3)),
                np.save(d / "a.labels.npy", np.zeros(3, dtype=np.int64))),
     r"b.labels.npy is missing, but other files have labels"),
    (lambda d: (np.save(d / "a.npy", images(3)),
                np.save(d / "a.labels.npy", np.zeros(3, dtype=np.float32))),
     r"labels must be integers"),
    (lambda d: np.save(d / "a.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True),
     r"cannot be read without pickle"),
    (lambda d: (d / "a.npy").write_bytes(b"not numpy"), r"a.npy is not a .npy file"),
    (lambda d: (np.save(d / "a.npy", images(30)),
                (d / "a.npy").write_bytes((d / "a.npy").read_bytes()[:300])),
     r"a.npy is not a readable .npy file"),
    (lambda d: (np.save(d / "train.npy", images(3)), np.save(d / "extra.npy", images(3))),
     r"mixes split files or folders \(train\) with other .npy files \(extra\)"),
])
def test_bad_npy_sources_are_named(tmp_path, make, match):
    make(tmp_path)
    with pytest.raises(DataError, match=match):
        open_npy(str(tmp_path), "all", fractions=FRACTIONS, seed=0)


def test_statistics_are_exact_and_refuse_nan(tmp_path):
    x = images(1000, shape=(7,))
    store = ArrayRows([x], None, name="n", split="train", source="s")
    store.chunk_rows = lambda: 64  # several chunks
    stats = store.statistics()
    expected = torch.from_numpy((x.astype(np.float64).mean(0) / 255).astype(np.float32))
    assert torch.equal(stats.mean, expected)
    assert (stats.lo, stats.hi) == (x.min() / 255, float(np.float32(x.max() / 255)))
    f = np.random.default_rng(0).standard_normal((50, 3))
    f[31, 1] = np.nan
    with pytest.raises(DataError, match=r"n \(train\) has 1 NaN or infinite values"):
        ArrayRows([f], None, name="n", split="train", source="s").statistics()


def test_pages_are_released_from_memory_maps(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", images(400))
    store = open_npy(str(tmp_path / "a.npy"), "all", fractions=FRACTIONS, seed=0)
    calls = []
    monkeypatch.setattr("vaelab.data.rows.RELEASE_BYTES", 3000)
    monkeypatch.setattr("vaelab.data.rows.FAULT_AROUND", 100)
    monkeypatch.setattr("vaelab.data.rows.release_pages", lambda a: calls.append(a) or True)
    store.gather(torch.arange(100))  # one run of 2000 bytes (+ 100 around): no release yet
    assert calls == []
    store.gather(torch.arange(0, 400, 40))  # 10 rows apart: 10 x 120 bytes mapped
    assert len(calls) == 1
    assert release_pages(store.arrays[0]) is True  # the real call, on a real mapping
    assert release_pages(np.zeros(3)) is False  # not mapped: nothing to do


@pytest.mark.parametrize("kind", ["memory", "mapped", "dataset"])
def test_static_binarization_per_batch_equals_the_whole_split_at_once(tmp_path, kind):
    x = images(60)
    whole = fixed_binarization(reference(x), 11)
    if kind == "memory":
        rows = TensorRows.of(make_dataset(x, None, name="n", split="train", source="s",
                                          what="w"))
    elif kind == "mapped":
        np.save(tmp_path / "a.npy", x)
        rows = open_npy(str(tmp_path / "a.npy"), "all", fractions=FRACTIONS, seed=0)
    else:
        rows = DatasetRows(list(torch.from_numpy(x)), name="n", split="train")
    bits = static_binarization(rows, 11)
    idx = torch.tensor([59, 0, 17, 33])
    assert torch.equal(bits.gather(idx), whole[idx])


def test_head_keeps_the_first_rows_and_labels():
    x = images(20)
    y = torch.arange(20)
    rows = TensorRows(torch.from_numpy(x[:, None]), y, name="n", split="train", source="s",
                      is_8bit=True)
    head = rows.head(5)
    assert len(head) == 5 and torch.equal(head.y, y[:5])
    assert torch.equal(head.gather(torch.arange(5)), reference(x[:5]))
    assert rows.head(0) is rows
    with pytest.raises(ConfigError, match=r"data.train_limit=21 must be between 0 \(all\)"):
        rows.head(21)
    mapped = ArrayRows([x], y.numpy(), name="n", split="train", source="s",
                       rows=np.arange(4, 20)).head(3)
    assert torch.equal(mapped.y, y[4:7]) and torch.equal(mapped.gather(torch.arange(3)),
                                                         reference(x[4:7]))


class Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dataset_rows_read_items_and_labels():
    x = images(12)
    ds = Items([(torch.from_numpy(x[i]), i % 3) for i in range(12)])
    rows = DatasetRows(ds, name="python", split="train")
    assert rows.is_8bit and rows.event_shape == (1, 5, 4)
    assert torch.equal(rows.gather(torch.tensor([7, 2])), reference(x)[[7, 2]])
    taken = rows.take(np.array([1, 4]))
    assert torch.equal(taken.y, torch.tensor([1, 1])) and taken.values.dtype == torch.uint8


@pytest.mark.parametrize(("bad", "match"), [
    (torch.zeros(4, 5), r"data item 3 has shape \(4, 5\), but item 0 has \(5, 4\)"),
    (torch.zeros(5, 4, dtype=torch.float64), r"data item 3 has dtype torch.float64, but item 0"),
    ("a string", r"data item 3 is a str, not a tensor or numpy array of numbers"),
    (np.array([["a"] * 4] * 5), r"data item 3 is a tensor of <U1"),
])
def test_bad_dataset_items_are_named_by_index(bad, match):
    items = [torch.zeros(5, 4) for _ in range(6)]
    items[3] = bad
    rows = DatasetRows(Items(items), name="python", split="train")
    with pytest.raises(DataError, match=match):
        rows.gather(torch.tensor([5, 3, 0]))


def test_dataset_items_outside_the_unit_interval_or_nan_are_named():
    items = [torch.full((3,), 0.5) for _ in range(5)]
    items[2] = torch.tensor([0.5, 2.0, 0.5])
    items[4] = torch.tensor([0.5, float("nan"), 0.5])
    rows = DatasetRows(Items(items), name="python", split="train")
    with pytest.raises(DataError, match=r"data item 4 has NaN or infinite values"):
        rows.gather(torch.tensor([4]))
    rows.check_unit = True
    with pytest.raises(DataError, match=r"data item 2 has values outside \[0, 1\]"):
        rows.gather(torch.tensor([2, 1]))


def test_vamp_pseudo_inputs_from_a_store_equal_those_from_the_tensor(tmp_path):
    from vaelab.build import build_model

    x = images(40, shape=(4, 4))
    np.save(tmp_path / "a.npy", x)
    store = open_npy(str(tmp_path / "a.npy"), "all", fractions=FRACTIONS, seed=0)
    cfg = load_config(None, ["model.prior=vamp", "model.prior_components=5",
                             "model.hidden=[8]", "model.latent_dim=2"]).model
    models = []
    for data_x in (reference(x), store):
        torch.manual_seed(0)
        models.append(build_model(cfg, (1, 4, 4), data_x=data_x))
    a, b = (dict(m.named_parameters()) for m in models)
    assert any("pseudo" in k for k in a)
    for key, value in a.items():
        assert torch.equal(b[key], value), key


def test_vaelab_data_inspect_reads_npy_sources(tmp_path):
    from vaelab.data.inspection import inspect_data

    np.save(tmp_path / "a.npy", images(50))
    facts = inspect_data(str(tmp_path / "a.npy"))
    assert facts.kind == ".npy file(s), memory-mapped" and facts.is_8bit
    assert facts.rows["all"] == 50 and facts.rows["train"] == 40


def test_statistics_in_shards_read_each_share_once_and_equal_one_process(tmp_path):
    x = images(101)
    np.save(tmp_path / "a.npy", x)

    def store():
        return open_npy(str(tmp_path / "a.npy"), "all", fractions=FRACTIONS, seed=0)

    tables, reads = [], []
    for rank in range(3):  # what each of 3 processes computes and reads
        s = store()
        s.read_log = []
        s.statistics((rank, 3), combine=lambda t: tables.append(t) or t)
        reads.append(np.concatenate(s.read_log).tolist())
    assert sorted(row for r in reads for row in r) == list(range(101))  # each row once
    joined = store()._from_parts(sum(tables))
    alone = store().statistics()
    assert torch.equal(joined.mean, alone.mean) and (joined.lo, joined.hi) == (alone.lo,
                                                                               alone.hi)
