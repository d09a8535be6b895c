"""The malloc setting that keeps freed buffers: on where it can be, off on request."""

import os
import subprocess
import sys

import pytest

from vaelab.training.heap import keep_freed_memory

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def run_child(env_extra: dict[str, str]) -> str:
    code = "from vaelab.training.heap import keep_freed_memory as k; print(k(), k())"
    env = {k: v for k, v in os.environ.items() if k != "VAELAB_MALLOC"}
    env.update(PYTHONPATH=SRC, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_set_on_linux_and_idempotent():
    assert run_child({}) == "True True"
    assert keep_freed_memory() is True


def test_switched_off_by_environment():
    assert run_child({"VAELAB_MALLOC": "default"}) == "False False"


def test_library_calls_leave_malloc_alone(tmp_path):
    """vaelab.fit and Run.evaluate must not tune malloc for a user's process; the CLI does."""
    code = (
        "import sys; sys.path.insert(0, {!r})\n"
        "from tiny import make_npz, tiny_config\n"
        "from pathlib import Path\n"
        "import vaelab\n"
        "from vaelab.training import heap\n"
        "cfg = tiny_config(make_npz(Path({!r}) / 'd.npz'))\n"
        "run = vaelab.fit(cfg, out=Path({!r}) / 'run', pictures=False)\n"
        "run.evaluate('test', iw_samples=4)\n"
        "print(heap._done)\n"
    ).format(os.path.join(os.path.dirname(__file__), ".."), str(tmp_path), str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "VAELAB_MALLOC"}
    env.update(PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    assert out[-1] == "False"
