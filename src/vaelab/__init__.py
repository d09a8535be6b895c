"""vaelab: variational autoencoders in PyTorch, trained on real data, measured honestly.

The top-level names are imported lazily so ``import vaelab.<module>`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "vaelab.api", "load_run": "vaelab.api", "Run": "vaelab.api",
    "Config": "vaelab.config", "load_config": "vaelab.config", "VAE": "vaelab.models.vae",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vaelab' has no attribute '{name}'")
