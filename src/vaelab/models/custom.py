"""Your own encoder and decoder: import them by path, and check them with one dry batch.

The contract (docs/own-model.md), with B datapoints and D = ``posterior.flat_dim``:

* encoder: x (B, *event_shape) -> (B, posterior.param_size), the raw parameters of q(z|x)
  (e.g. 2 * latent_dim for a diagonal Gaussian: means, then pre-softplus scales);
* decoder: z (B, D) -> (B, k, *event_shape), k = ``likelihood.params_per_element``; when
  k = 1 the k axis may be left out, (B, *event_shape). Leading sample dimensions (K
  importance samples) are flattened into B by ``VAE.decode``, so the decoder sees 2-D z.

``check_networks`` runs both once, in eval mode and without gradients, on a batch of zeros,
so a module that returns the wrong shape fails before training (and before any file is
written) with the shape it returned and the shape needed.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from vaelab.models.latents import LatentFamily
from vaelab.models.likelihoods import Likelihood

DRY_BATCH = 3  # rows of the dry batch; not 1 or 2, so batch axes are not confused with others


class ContractError(ValueError):
    """An encoder or decoder that does not fit the latent family or likelihood."""


def is_import_path(spec: str) -> bool:
    """``"package.module:Class"``: a module vaelab imports and builds with keyword args."""
    return ":" in spec


def import_module_path(spec: str, kwargs: dict[str, Any], key: str) -> nn.Module:
    """Build ``module:attr`` (a class or a factory function) with ``kwargs``.

    ``key`` names the config field (``model.encoder``) for the error messages.
    """
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ContractError(f"{key}={spec!r}: cannot import {module_name!r} ({err}); make it "
                            "importable (pip install -e your package, or PYTHONPATH)") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ContractError(f"{key}={spec!r}: {module_name} has no attribute {attr!r}; "
                                "name a class or function defined at the module's top level")
        obj = getattr(obj, part)
    try:
        built = obj(**kwargs)
    except TypeError as err:
        raise ContractError(f"{key}={spec!r} could not be built with {key}_kwargs={kwargs}: "
                            f"{err}") from None
    if not isinstance(built, nn.Module):
        raise ContractError(f"{key}={spec!r} built a {type(built).__name__}, not a "
                            "torch.nn.Module")
    return built


def class_path(module: nn.Module) -> str:
    """``package.module:Class`` of a module instance (for the run's meta.json)."""
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def _shape(t: Any, batch: int) -> str:
    """A shape with the batch axis written B: (B, 40)."""
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}, not a tensor"
    dims = ["B" if i == 0 and d == batch else str(d) for i, d in enumerate(t.shape)]
    return "(" + ", ".join(dims) + ")"


def _needed(dims: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", *map(str, dims)]) + ")"


def _latent_needs(family: LatentFamily, latent: str) -> str:
    dims = "x".join(map(str, family.latent_shape))
    return (f"model.latent={latent} with latent_dim={family.latent_shape[0]} needs "
            f"{_needed((family.param_size,))}: {family.param_note}"
            + ("" if len(family.latent_shape) == 1 else f" (latent shape {dims})"))


def _run(module: nn.Module, x: torch.Tensor, who: str) -> Any:
    was_training = module.training
    module.eval()  # no batch-norm statistics updated by the dry batch
    try:
        with torch.no_grad():
            return module(x)
    except Exception as err:  # the user's module: any failure is reported the same way
        raise ContractError(f"{who} failed on the dry batch of shape {_shape(x, x.shape[0])}: "
                            f"{type(err).__name__}: {err}") from None
    finally:
        module.train(was_training)


def _param_device(*modules: nn.Module) -> torch.device:
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            return t.device
    return torch.device("cpu")


def check_networks(encoder: nn.Module, decoder: nn.Module, posterior: LatentFamily,
                   likelihood: Likelihood, *, latent: str, likelihood_name: str) -> None:
    """Run encoder and decoder once on zeros; raise ContractError naming the module, the
    shape it returned and the shape needed (``latent``/``likelihood_name``: config names)."""
    b = DRY_BATCH
    device = _param_device(encoder, decoder)
    event = tuple(likelihood.event_shape)
    x = torch.zeros(b, *event, device=device)
    out = _run(encoder, x, "encoder")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b, posterior.param_size):
        raise ContractError(f"encoder returned {_shape(out, b)} for x of shape "
                            f"{_needed(event)}; {_latent_needs(posterior, latent)}")
    z = torch.zeros(b, posterior.flat_dim, device=device)
    out = _run(decoder, z, "decoder")
    k = likelihood.params_per_element
    full = (b, k, *event)
    fits = isinstance(out, torch.Tensor) and (
        tuple(out.shape) == full or (k == 1 and tuple(out.shape) == (b, *event)))
    if not fits:
        alt = f" or {_needed(event)}" if k == 1 else ""
        raise ContractError(
            f"decoder returned {_shape(out, b)} for z of shape {_needed((posterior.flat_dim,))}"
            f"; model.likelihood={likelihood_name} on data of shape {event} needs "
            f"{_needed(full[1:])}{alt}: {likelihood.param_note}")
