"""Memory-mapped data under data parallelism: a 2-process gloo run on .npy shards equals one
process (and the in-memory run of the same data), and each rank reads only its own rows of
every global batch, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distributed import SRC, settings, train_two_processes

from vaelab.api import fit
from vaelab.config import load_config
from vaelab.rng import Shard
from vaelab.training.runs import load_checkpoint


def shard_folder(root: Path) -> tuple[Path, Path]:
    """The tiny data of test_distributed as .npy files (train in 3 shards of uneven size)
    and, for comparison, as one .npz held in memory."""
    rng = np.random.default_rng(3)

    def images(n: int) -> np.ndarray:
        return (rng.random((n, 1, 6, 6)) * 255).astype(np.uint8)

    train, valid, test = images(68), images(12), images(12)
    folder = root / "shards"
    (folder / "train").mkdir(parents=True)
    for k, (a, b) in enumerate([(0, 30), (30, 31), (31, 68)]):
        np.save(folder / "train" / f"part-{k:03d}.npy", train[a:b])
    np.save(folder / "valid.npy", valid)
    np.save(folder / "test.npy", test)
    npz = root / "same.npz"
    np.savez(npz, x_train=train, x_valid=valid, x_test=test)
    return folder, npz


@pytest.mark.slow
def test_two_process_run_on_memory_mapped_shards_equals_one_process(tmp_path):
    folder, npz = shard_folder(tmp_path)
    sets = settings(folder)
    two = train_two_processes(tmp_path / "two", sets)
    threads = torch.get_num_threads()
    try:
        one = fit(load_config(overrides=sets), out=tmp_path / "one", pictures=False)
        memory = fit(load_config(overrides=[*settings(npz)]), out=tmp_path / "mem",
                     pictures=False)
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((two / "meta.json").read_text())
    assert meta["train_storage"] == "uint8 memory-mapped, 3 files"
    a = load_checkpoint(one.path / "checkpoints/last.pt")
    b = load_checkpoint(two / "checkpoints/last.pt")
    c = load_checkpoint(memory.path / "checkpoints/last.pt")
    assert (a["world_size"], b["world_size"]) == (1, 2) and b["trainer"]["step"] == 10
    for key, value in a["model"].items():
        assert torch.equal(c["model"][key], value), key  # mapped == in memory, bit for bit
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=2e-6)  # as DDP's test


READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    from vaelab.config import TrainConfig
    from vaelab.data.npy import open_npy
    from vaelab.training import distributed
    from vaelab.training.trainer import Trainer

    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    rows = open_npy(sys.argv[1], "all", fractions=[0.8, 0.1, 0.1], seed=0)
    rows.read_log = []
    module = torch.nn.Linear(36, 1)

    def step(batch, progress):
        out = module(batch.flatten(1)).squeeze(1)
        return out.pow(2).mean(), {"loss": out.detach()}

    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, seed=7)
    Trainer(cfg, module, step).fit(rows)
    reads = [r.tolist() for r in rows.read_log]
    with open(f"{sys.argv[2]}/reads-{ctx.rank}.json", "w") as fh:
        json.dump(reads, fh)
    distributed.cleanup(ctx)
""")


@pytest.mark.slow
def test_each_rank_reads_only_its_own_rows(tmp_path):
    rng = np.random.default_rng(0)
    n = 70  # batches of 16: the last one (6 rows) is cut to 3 + 3
    for k, (a, b) in enumerate([(0, 25), (25, 70)]):
        np.save(tmp_path / f"part-{k}.npy", rng.integers(0, 256, (b - a, 6, 6), dtype=np.uint8))
    script = tmp_path / "reader.py"
    script.write_text(READER)
    env = dict(os.environ, PYTHONPATH=SRC)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", str(script), str(tmp_path), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reads = [json.loads((tmp_path / f"reads-{r}.json").read_text()) for r in range(2)]
    # what each rank should read: its slice of every global batch of the trainer's order
    generator = torch.Generator().manual_seed(7)
    expected: list[list[list[int]]] = [[], []]
    for _ in range(2):
        perm = torch.randperm(n, generator=generator)
        for b in range(0, n, 16):
            batch = perm[b:b + 16]
            m = len(batch) // 2 * 2
            for rank in range(2):
                expected[rank].append(sorted(batch[:m][Shard(rank, 2).rows(m)].tolist()))
    assert reads == expected  # each read sorted; nothing else read (no whole-set pass)
    for epoch in range(2):
        mine = [{row for read in reads[r][epoch * 5:(epoch + 1) * 5] for row in read}
                for r in range(2)]
        assert not mine[0] & mine[1] and len(mine[0] | mine[1]) == n  # disjoint, complete
