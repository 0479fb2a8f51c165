"""circuitdiff: what did distillation do to a model's insides?

    import circuitdiff
    results = circuitdiff.compare("tiny-gpt2", "tiny-distilgpt2", tasks=["ioi"], out="out")

``compare`` and ``CompareOptions`` are imported on first use, so that ``import circuitdiff``
(and the command line's ``--help``) does not wait for torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CompareOptions", "LoadedModel", "__version__", "compare", "features", "load_model"]

_LAZY = {
    "compare": "circuitdiff.compare",
    "features": "circuitdiff.features",
    "CompareOptions": "circuitdiff.compare",
    "LoadedModel": "circuitdiff.models.loading",
    "load_model": "circuitdiff.models.loading",
}

if TYPE_CHECKING:
    from circuitdiff.compare import CompareOptions, compare
    from circuitdiff.features import features
    from circuitdiff.models.loading import LoadedModel, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # importing the submodule bound ``compare`` to it; the function wins
        return value
    raise AttributeError(f"module 'circuitdiff' has no attribute {name!r}")
