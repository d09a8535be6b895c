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
