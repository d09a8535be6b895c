"""Shared test setup: fast, deterministic, offline."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (linear_gaussian, ...)
os.environ.setdefault("VAELAB_NO_DOWNLOAD", "1")
# one thread per test process: tests are small, and oversubscribed OpenMP threads (several
# processes x 2 threads on 2 cores) slow everything down many times over
torch.set_num_threads(1)
