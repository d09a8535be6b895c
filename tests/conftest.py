"""Shared test setup: fast, deterministic, offline."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (linear_gaussian, ...)
os.environ.setdefault("VAELAB_NO_DOWNLOAD", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))
