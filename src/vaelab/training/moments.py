"""Adam's moments kept out of the subnormal range, where x86 arithmetic is slow.

``benchmarks/denormals.py`` counts the subnormal floats (below 1.2e-38) of a default-model
run after 12 epochs: none in the weights, the gradients or the step's intermediates, but
62,000 in Adam's first moment m, in the encoder's first layers. Wherever a gradient is
exactly zero (pixels that are always off in MNIST, dead ReLU units) m decays by
beta1 = 0.9 a step and spends some 150 steps among the subnormals before it underflows to
0; each operation on them takes a microcode assist (one fused Adam step on that state: 0.69
against 0.47 ms at one thread).

Every :data:`EVERY` steps the moments below a negligible size are set to 0 (CPU tensors
only; GPUs handle subnormals at full speed). Nothing that training computes changes: with
m below 1e-30 Adam's update is below lr 1e-30 / eps = 1e-25 (eps = 1e-8), under half a
float32 ulp of any weight above 1e-17, and a v below 1e-36 adds under 1e-18 to
sqrt(v) + eps. m falls from 1e-30 to 1.2e-38 in 173 steps at beta1 = 0.9, so clearing it
every 100 steps keeps it out of the subnormal range (``tests/training/test_moments.py``
trains with and without, bit for bit).
"""

from __future__ import annotations

import torch

EVERY = 100  # optimizer steps between two passes
FLOORS = {"exp_avg": 1e-30, "exp_avg_sq": 1e-36}  # Adam's m and v: below these, set to 0


def zero_negligible_moments(optimizer: torch.optim.Optimizer) -> None:
    """Set Adam's first and second moments below :data:`FLOORS` to 0, in place."""
    for state in optimizer.state.values():
        for key, floor in FLOORS.items():
            moment = state.get(key)
            if isinstance(moment, torch.Tensor) and moment.device.type == "cpu" \
                    and moment.is_floating_point():
                moment.masked_fill_(moment.abs() < floor, 0)
