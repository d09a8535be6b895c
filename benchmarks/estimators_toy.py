"""The issue's toy check in numbers: z ~ N(mu, sigma^2), f = z^2, d/dmu E[f] = 2 mu.

Measured mean and variance of one gradient draw per estimator against the analytic values
(pathwise 4 sigma^2; score function mu^4/sigma^2 + 14 mu^2 + 15 sigma^2; with a constant
baseline b: c^2/sigma^2 + 4c + 8 mu^2 + 10 sigma^2, c = mu^2 + sigma^2 - b), with standard
errors (of a sample variance: sqrt((m4 - s^4 (n-3)/(n-1)) / n)). The same checks, with
tolerances, are tests/inference/test_estimators.py.

    python benchmarks/estimators_toy.py
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

from vaelab.inference.baselines import LeaveOneOut, MovingAverage
from vaelab.inference.estimators import Pathwise, ScoreFunction

MU, SIGMA, N = 1.0, 0.5, 200_000


def sf_variance(b: float = 0.0) -> float:
    """Analytic variance of one score-function draw with a constant baseline b."""
    c = MU**2 + SIGMA**2 - b
    return c**2 / SIGMA**2 + 4 * c + 8 * MU**2 + 10 * SIGMA**2


def grads(est, k: int = 1, seed: int = 0) -> torch.Tensor:
    """N independent K-sample estimates of d/dmu E[z^2]: (N,)."""
    torch.manual_seed(seed)
    m = torch.full((N,), MU, dtype=torch.double, requires_grad=True)
    q = Normal(m, torch.full((N,), SIGMA, dtype=torch.double))
    z = est.sample(q, k)  # (K, N)
    s = est.surrogate(z**2, q.log_prob(z), None)
    return torch.autograd.grad(s.mean(0).sum(), m)[0]


def main() -> None:
    ma = ScoreFunction(MovingAverage(0.9))
    for _ in range(20):  # let the moving average settle, then freeze it
        grads(ma)
    ma.eval()
    b = ma.baseline.mean.get().item()
    rows = [("pathwise", grads(Pathwise()), 4 * SIGMA**2),
            ("score-function", grads(ScoreFunction()), sf_variance()),
            (f"score-function + moving average (b={b:.3f})", grads(ma), sf_variance(b)),
            ("score-function, K=2, no baseline", grads(ScoreFunction(), k=2),
             sf_variance() / 2),
            ("score-function, K=2, leave-one-out", grads(ScoreFunction(LeaveOneOut(2)), k=2),
             None)]
    print(f"mu={MU}, sigma={SIGMA}, {N} draws each")
    print("| estimator | mean (exact 2) | variance | analytic variance |")
    print("|---|---|---|---|")
    for name, g, exact in rows:
        se = g.std().item() / N**0.5
        c = g - g.mean()
        s2 = g.var().item()
        se_v = ((c**4).mean().item() - s2**2 * (N - 3) / (N - 1)) ** 0.5 / N**0.5
        ex = f"{exact:.3f}" if exact is not None else "-"
        print(f"| {name} | {g.mean().item():.4f} ± {se:.4f} | {s2:.3f} ± {se_v:.3f} | {ex} |")


if __name__ == "__main__":
    main()
