"""Importance-sampled averages in chunks of samples: the memory of one chunk for any K."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def chunked_log_mean_exp(log_w: Callable[[int], torch.Tensor], samples: int,
                         sample_chunk: int) -> torch.Tensor:
    """log (1/K) sum_k exp(log w_k) over K = ``samples`` weights drawn ``sample_chunk`` at a
    time (``log_w(k)`` -> (k, B)), accumulated with logaddexp so memory stays one chunk."""
    acc = None
    for start in range(0, samples, sample_chunk):
        chunk = torch.logsumexp(log_w(min(sample_chunk, samples - start)), 0)
        acc = chunk if acc is None else torch.logaddexp(acc, chunk)
    if acc is None:  # no chunk drawn
        raise ValueError(f"samples must be at least 1, got {samples}")
    return acc - math.log(samples)

