"""Registry: pick the adapter from ``config.model_type`` so teacher and student share names.

Every module of this package is imported here, and an ``Adapter`` subclass that sets
``model_types`` registers itself (``base.REGISTRY``): a new family is one file in this folder.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from circuitdiff.errors import UnsupportedArchitectureError
from circuitdiff.models.adapters.base import REGISTRY, Adapter

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

ADAPTERS: tuple[type[Adapter], ...] = tuple(dict.fromkeys(REGISTRY[t] for t in sorted(REGISTRY)))
"""Every registered adapter class, once."""
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(REGISTRY))


def adapter_class_for(model_type: str) -> type[Adapter]:
    """The adapter class for a config's ``model_type``; a clear error for anything else."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unsupported architecture '{model_type}'; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def adapter_for(model: nn.Module) -> Adapter:
    return adapter_class_for(model.config.model_type)(model)


__all__ = ["ADAPTERS", "SUPPORTED_MODEL_TYPES", "Adapter", "adapter_class_for", "adapter_for"]
