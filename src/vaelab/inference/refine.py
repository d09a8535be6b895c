"""Inference beyond the encoder: per-datapoint variational parameters and black-box VI.

Amortized inference gives q(z|x_i) = family(encoder(x_i)). The alternative of seeds 001 and
004 keeps one free lambda_i per datapoint (mean-field over datapoints) and finds it by
gradient ascent on that datapoint's ELBO with the decoder fixed: black-box VI (Ranganath et
al. 2014). Started from the encoder's output, BBVI is *refinement* (Hjelm et al. 2016; Kim et
al. 2018); what it gains over the encoder is the amortization gap (Cremer et al. 2018).

Variational parameters live in the *same raw parameterisation the latent family's forward
takes*, so ``family(lambda)`` is the same Distribution an encoder yields, and every
objective, estimator and evaluation function works unchanged on ``with_params(model, lambda)``,
a VAE that shares the model's prior, decoder and likelihood and whose "encoder" returns lambda.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.inference.estimators import Estimator, Pathwise
from vaelab.inference.objectives import ObjectiveOutput, elbo
from vaelab.models.latents import LatentFamily
from vaelab.models.vae import VAE

Objective = Callable[[VAE, torch.Tensor], ObjectiveOutput]
INITS = ("prior", "random", "encoder")
# black-box VI defaults for evaluation (vaelab gap, mean-field runs): Adam, cosine schedule;
# measured on MNIST in docs/inference.md
BBVI_STEPS, BBVI_LR, BBVI_LR_FINAL = 500, 0.05, 0.001
# steps=None (the default of fit_posteriors): cosine cycles of BBVI_STEPS steps, each from the
# last one's end, until a cycle raises the mean ELBO by less than BBVI_TOL nats per datapoint
# (measured with the same BBVI_EVAL_SAMPLES draws each time, so the difference is nearly free
# of Monte Carlo noise), at most BBVI_MAX_STEPS steps; Refinement.converged reports which
BBVI_TOL, BBVI_EVAL_SAMPLES, BBVI_MAX_STEPS = 0.002, 64, 8000


class RefinementError(ValueError):
    """Per-datapoint inference that cannot run as asked; the message says what to change."""


def check_table_family(family: nn.Module) -> LatentFamily:
    """The model's posterior family, if a table of per-datapoint parameters can stand for it.

    A table can represent a family whose q(z|x) is ``family(params)`` with nothing shared
    between datapoints: a ``LatentFamily`` with an integer ``param_size`` and no trainable
    parameters of its own (shared parameters would be amortized, not per-datapoint).
    """
    name = type(family).__name__
    if not isinstance(family, LatentFamily) or not isinstance(
            getattr(family, "param_size", None), int):
        raise RefinementError(
            f"the posterior {name} is not a latent family with a fixed number of parameters, "
            "so a per-datapoint table cannot represent it; use a run with model.latent="
            "gaussian, gaussian-full, categorical or bernoulli")
    shared = [n for n, p in family.named_parameters() if p.requires_grad]
    if shared:
        raise RefinementError(
            f"the posterior {name} has parameters shared by all datapoints "
            f"({', '.join(shared)}), so a per-datapoint table cannot represent it; use a run "
            "whose model.latent family is a plain function of the encoder output "
            "(gaussian, gaussian-full, categorical, bernoulli)")
    return family


class ParamsEncoder(nn.Module):
    """An "encoder" that returns given variational parameters: row i belongs to x[i]."""

    def __init__(self, params: torch.Tensor):
        super().__init__()
        self.params = params  # (B, param_size); a plain tensor so gradients reach its source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.params.shape[0]:
            raise RefinementError(f"{x.shape[0]} datapoints but {self.params.shape[0]} rows of "
                                  "variational parameters; pass one row per datapoint")
        return self.params


def row_keys(x: torch.Tensor) -> list[bytes]:
    """A digest of each row's bytes: a datapoint's identity is its value."""
    rows = x.detach().cpu().contiguous().view(x.shape[0], -1).numpy()
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


class LookupEncoder(nn.Module):
    """Per-datapoint parameters for a fixed set of datapoints, found by each row's value.

    Evaluation and plotting functions batch x themselves; this lets them use posteriors
    fitted per datapoint (BBVI) on any batches of those datapoints. Identical rows share
    one entry (the last fitted), as they share one exact posterior.
    """

    def __init__(self, x: torch.Tensor, params: torch.Tensor):
        super().__init__()
        self.index = {key: i for i, key in enumerate(row_keys(x))}
        self.params = params  # (N, param_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = [self.index.get(key) for key in row_keys(x)]
        if any(i is None for i in idx):
            raise RefinementError(f"a datapoint is not among the {len(self.index)} that these "
                                  "per-datapoint posteriors were fitted to; run BBVI on it "
                                  "first (inference.fit_posteriors)")
        return self.params[torch.tensor(idx, device=self.params.device)]


def with_params(model: VAE, params: torch.Tensor) -> VAE:
    """The same generative model with q(z|x_i) = family(params[i]) (modules shared, no copy)."""
    return VAE(ParamsEncoder(params), model.posterior, model.prior_module, model.decoder,
               model.likelihood)


def prior_init(family: LatentFamily, n: int, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """(n, param_size) copies of the family's standard member (N(0, I), uniform)."""
    params = family.prior_params()
    if like is not None:
        params = params.to(like)
    return params.expand(n, -1).clone()


def random_init(family: LatentFamily, n: int, *, std: float = 0.1,
                generator: torch.Generator | None = None,
                like: torch.Tensor | None = None) -> torch.Tensor:
    """The standard member plus N(0, std^2) noise on every raw parameter."""
    base = prior_init(family, n, like=like)
    noise = torch.randn(base.shape, generator=generator, dtype=torch.float64)
    return base + std * noise.to(base)


@torch.no_grad()
def encoder_init(model: VAE, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """(N, param_size) the encoder's output for each row of x: refinement's starting point."""
    return torch.cat([model.encoder(x[i:i + batch_size])
                      for i in range(0, x.shape[0], batch_size)])


class PerDatapointParams(nn.Module):
    """A table of variational parameters lambda_i, one row per datapoint id (mean-field).

    ``table(idx)`` returns the same Distribution type the encoder path gives, so a table can
    replace the encoder anywhere (``table.view(model, idx)``).
    """

    def __init__(self, family: LatentFamily, n: int, *, init: str = "prior",
                 std: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        check_table_family(family)
        if n < 1:
            raise RefinementError(f"a table needs at least one datapoint, got n={n}")
        if init not in ("prior", "random"):
            raise RefinementError(f"table init '{init}' is not known; use prior or random "
                                  "(or load encoder outputs with table.assign)")
        self.family = family
        start = prior_init(family, n) if init == "prior" else \
            random_init(family, n, std=std, generator=generator)
        self.params = nn.Parameter(start)  # (N, param_size)

    def forward(self, idx: torch.Tensor) -> Distribution:
        return self.family(self.params[idx])

    def view(self, model: VAE, idx: torch.Tensor) -> VAE:
        return with_params(model, self.params[idx])

    @torch.no_grad()
    def assign(self, idx: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite rows ``idx`` (e.g. with encoder outputs or refined parameters)."""
        self.params[idx] = values.detach().to(self.params)


def pathwise_or_refuse(q: Distribution) -> Estimator:
    """The estimator when the caller names none: pathwise, which needs a q with rsample.
    A discrete q needs the score-function estimator, whose baseline is a configuration
    choice made in one place: ``vaelab.build.bbvi_estimator``."""
    if q.has_rsample:
        return Pathwise()
    raise RefinementError(f"{type(q).__name__} has no rsample, so BBVI needs the "
                          "score-function estimator: pass estimator="
                          "vaelab.build.bbvi_estimator(model.posterior, samples)")


def bbvi_samples(family: LatentFamily, samples: int | None) -> int:
    """z samples per BBVI gradient: as given, else 1 for reparameterizable families and 8
    for discrete ones (their score-function gradient needs K >= 2 for the leave-one-out
    baseline, which keeps its variance usable)."""
    if samples is not None:
        return samples
    return 8 if family.discrete else 1


def elbo_objective(*, samples: int = 1, kl: str = "auto",
                   estimator: Estimator | None = None) -> Objective:
    """The plain ELBO (beta = 1) with K samples: what black-box VI maximizes."""
    def objective(model: VAE, x: torch.Tensor) -> ObjectiveOutput:
        est = estimator or pathwise_or_refuse(model.encode(x))
        return elbo(model, x, samples=samples, kl=kl, estimator=est)
    return objective


@dataclass
class Refinement:
    params: torch.Tensor  # (B, P) final lambda; carries a graph only when differentiable
    trace: torch.Tensor  # (steps + 1, B) bound at lambda_0 .. lambda_steps (last: if evaluated)
    first_grad: torch.Tensor | None  # (B, P) d loss / d lambda at lambda_0 (None if steps=0)
    steps: int = 0  # steps taken
    converged: bool | None = None  # steps=None: whether the criterion was met in the budget


def refine(model: VAE, x: torch.Tensor, init: torch.Tensor, *, steps: int, lr: float,
           lr_final: float | None = None, objective: Objective | None = None,
           samples: int = 1, method: str = "adam", differentiable: bool = False,
           clip: float = 0.0, evaluate_last: bool = True,
           estimator: Estimator | None = None) -> Refinement:
    """Black-box VI on a fixed decoder: ``steps`` gradient steps on each row of ``init``.

    Each datapoint's lambda_i enters only its own ELBO, and the loss is the *sum* over
    datapoints, so d loss / d lambda_i is that datapoint's own gradient whatever the batch.
    Adam is coordinate-wise (its moments are per parameter), so one Adam over the whole
    (B, P) block is exactly B independent per-datapoint optimisations, done in one pass.

    x (B, *event); init (B, P) raw parameters; objective(model, x) -> ObjectiveOutput
    (default: the ELBO with ``samples`` samples and ``estimator``, pathwise when None;
    a discrete q needs ``vaelab.build.bbvi_estimator``). ``lr_final`` anneals the learning rate
    from ``lr`` towards it on a cosine over the steps (a less noisy end point).
    ``method``: "adam", or "sgd" (plain gradient descent on the loss, each datapoint's
    gradient norm clipped at ``clip`` when > 0). ``differentiable`` (sgd only) keeps the
    graph from ``init`` through every step, so a loss at the result can train whatever
    produced ``init`` (Kim et al. 2018). Only lambda is differentiated: the model's
    parameters get no ``.grad`` here.
    """
    lr_final = lr if lr_final is None else lr_final
    if steps < 0 or lr <= 0 or lr_final <= 0:
        raise RefinementError(f"refinement needs steps >= 0 and learning rates > 0, got "
                              f"steps={steps}, lr={lr}, lr_final={lr_final}")
    if method not in ("adam", "sgd"):
        raise RefinementError(f"refinement method '{method}' is not known; use adam or sgd")
    if differentiable and method != "sgd":
        raise RefinementError("differentiating through refinement needs method='sgd'")
    if init.shape[0] != x.shape[0]:
        raise RefinementError(f"{x.shape[0]} datapoints but {init.shape[0]} rows of initial "
                              "parameters")
    objective = objective or elbo_objective(samples=samples, estimator=estimator)
    with torch.enable_grad():  # callers may sit under no_grad (evaluation)
        lam = init if differentiable else init.detach().clone()
        if not lam.requires_grad:
            lam.requires_grad_(True)
        # Adam's moments are per coordinate: one optimizer over the (B, P) leaf is B
        # independent per-datapoint optimisations
        adam = torch.optim.Adam([lam], lr=lr) if method == "adam" else None
        trace, first_grad = [], None
        for t in range(1, steps + 1):
            lr_t = lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * (t - 1) / steps))
            out = objective(with_params(model, lam), x)
            if not torch.isfinite(out.loss):
                raise RefinementError(f"refinement diverged at step {t} (non-finite ELBO); "
                                      "lower the refinement learning rate")
            trace.append(out.bound.detach())
            (grad,) = torch.autograd.grad(out.loss * x.shape[0], lam,
                                          create_graph=differentiable)
            if first_grad is None:
                first_grad = grad.detach()
            if adam is not None:
                adam.param_groups[0]["lr"] = lr_t
                lam.grad = grad
                adam.step()  # in place on the leaf lam
                continue
            if clip > 0:
                norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
                grad = grad * (clip / norm).clamp(max=1.0).view(-1, *[1] * (grad.dim() - 1))
            lam = lam - lr_t * grad
            if not differentiable:
                lam = lam.detach().requires_grad_(True)
    if evaluate_last:
        with torch.no_grad():
            trace.append(objective(with_params(model, lam.detach()), x).bound)
    params = lam if differentiable else lam.detach()
    trace_t = torch.stack(trace) if trace else x.new_zeros(0, x.shape[0])
    return Refinement(params=params, trace=trace_t, first_grad=first_grad, steps=steps)


@torch.no_grad()
def _fixed_draw_elbo(model: VAE, x: torch.Tensor, params: torch.Tensor,
                     samples: int, estimator: Estimator | None) -> torch.Tensor:
    """(B,) ELBOs at ``params`` with a fixed seed: the same draws at every call (common random
    numbers), so two calls differ by the change in q, not by Monte Carlo noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = elbo_objective(samples=samples, estimator=estimator)(
            with_params(model, params), x)
    return out.bound.detach()


def refine_until_converged(model: VAE, x: torch.Tensor, init: torch.Tensor, *, lr: float,
                           lr_final: float | None = None, samples: int = 1,
                           objective: Objective | None = None, cycle: int = BBVI_STEPS,
                           tol: float = BBVI_TOL, max_steps: int = BBVI_MAX_STEPS,
                           eval_samples: int = BBVI_EVAL_SAMPLES,
                           estimator: Estimator | None = None) -> Refinement:
    """BBVI (``refine``, Adam) in cosine cycles of ``cycle`` steps, each from the previous
    one's end, until a cycle raises the mean ELBO by less than ``tol`` nats per datapoint, or
    ``max_steps`` are spent; ``converged`` says which. Why cycles: a fixed budget that suits
    one model leaves another far from its optimum (500 steps from the prior leave ~0.3 nats
    on a linear-Gaussian model where 2000 leave 0.01); the criterion finds the budget."""
    if cycle < 1 or tol <= 0 or max_steps < cycle:
        raise RefinementError(f"convergence needs cycle >= 1, tol > 0, max_steps >= cycle; got "
                              f"{cycle}, {tol}, {max_steps}")
    lam, traces, steps = init.detach(), [], 0
    before = _fixed_draw_elbo(model, x, lam, eval_samples, estimator)
    converged = False
    while steps + cycle <= max_steps:
        res = refine(model, x, lam, steps=cycle, lr=lr, lr_final=lr_final, samples=samples,
                     objective=objective, evaluate_last=False, estimator=estimator)
        lam, steps = res.params, steps + cycle
        traces.append(res.trace)
        after = _fixed_draw_elbo(model, x, lam, eval_samples, estimator)
        if float((after - before).mean()) < tol:  # the mean gain per datapoint
            converged = True
            break
        before = after
    with torch.no_grad():
        last = (objective or elbo_objective(samples=samples, estimator=estimator))(
            with_params(model, lam), x).bound
    trace = torch.cat([*traces, last.unsqueeze(0)])
    return Refinement(params=lam, trace=trace, first_grad=None, steps=steps,
                      converged=converged)


def initial_params(model: VAE, x: torch.Tensor, init: str, *, batch_size: int = 1000,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, P) starting parameters for rows of x: "prior", "random" or "encoder"."""
    family = check_table_family(model.posterior)
    like = next(model.decoder.parameters(), x)
    if init == "prior":
        return prior_init(family, x.shape[0], like=like)
    if init == "random":
        return random_init(family, x.shape[0], generator=generator, like=like)
    if init == "encoder":
        return encoder_init(model, x, batch_size=batch_size)
    raise RefinementError(f"init '{init}' is not known; choose one of {', '.join(INITS)}")


def refine_dataset(model: VAE, x: torch.Tensor, init: str | torch.Tensor, *,
                   steps: int | None, lr: float, lr_final: float | None = None,
                   samples: int | None = None, objective: Objective | None = None,
                   batch_size: int = 500, progress: bool = False,
                   estimator: Estimator | None = None) -> Refinement:
    """``refine`` over all of x in chunks of ``batch_size`` (exact: datapoints are
    independent); returns params (N, P) and trace (steps + 1, N). ``samples``: see
    ``bbvi_samples``. ``steps=None``: each chunk until converged
    (``refine_until_converged``); shorter traces are padded with their last row."""
    from vaelab.console import progress as progress_bar

    samples = bbvi_samples(check_table_family(model.posterior), samples)
    start = init if isinstance(init, torch.Tensor) else \
        initial_params(model, x, init, batch_size=batch_size)
    params, traces = [], []
    bar = progress_bar(x.shape[0], f"refining ({steps or 'until converged'} steps)",
                       enabled=progress, log_lines=True)
    results = []
    for i in range(0, x.shape[0], batch_size):
        xs, init_s = x[i:i + batch_size], start[i:i + batch_size]
        res = refine(model, xs, init_s, steps=steps, lr=lr, lr_final=lr_final,
                     samples=samples, objective=objective, estimator=estimator) \
            if steps is not None else \
            refine_until_converged(model, xs, init_s, lr=lr, lr_final=lr_final,
                                   samples=samples, objective=objective, estimator=estimator)
        results.append(res)
        params.append(res.params)
        traces.append(res.trace)
        bar.update(res.params.shape[0])
    bar.close()
    length = max(t.shape[0] for t in traces)
    traces = [torch.cat([t, t[-1:].expand(length - t.shape[0], -1)]) for t in traces]
    converged = None if steps is not None else all(bool(r.converged) for r in results)
    return Refinement(params=torch.cat(params), trace=torch.cat(traces, 1), first_grad=None,
                      steps=max(r.steps for r in results), converged=converged)


def fit_posteriors(model: VAE, x: torch.Tensor, *, init: str = "prior",
                   steps: int | None = None, lr: float = BBVI_LR,
                   lr_final: float = BBVI_LR_FINAL, samples: int | None = None,
                   batch_size: int = 500, progress: bool = False,
                   estimator: Estimator | None = None) -> VAE:
    """The model with q(z|x_i) fitted by BBVI for each row of x: a VAE whose encoder looks
    the datapoints up, so ``evaluate``, plots, etc. work on it (for those x only).

    ``steps=None`` (default): until converged (``refine_until_converged``); the returned
    model's ``bbvi`` attribute says how many steps ran and whether the criterion was met.
    ``estimator``: BBVI's gradient estimator, pathwise when None (a discrete q needs
    ``vaelab.build.bbvi_estimator(model.posterior, samples)``).
    """
    res = refine_dataset(model, x, init, steps=steps, lr=lr, lr_final=lr_final,
                         samples=samples, batch_size=batch_size, progress=progress,
                         estimator=estimator)
    fitted = VAE(LookupEncoder(x, res.params), model.posterior, model.prior_module,
                 model.decoder, model.likelihood)
    fitted.bbvi = {"steps": res.steps, "converged": res.converged}  # type: ignore[assignment]
    return fitted
