"""Registry: pick the adapter from ``config.model_type`` so teacher and student share names."""

from __future__ import annotations

from torch import nn

from circuitdiff.errors import UnsupportedArchitectureError
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.adapters.bert import BertAdapter
from circuitdiff.models.adapters.distilbert import DistilBertAdapter
from circuitdiff.models.adapters.gpt2 import GPT2Adapter
from circuitdiff.models.adapters.gpt_neox import GPTNeoXAdapter
from circuitdiff.models.adapters.llama import LlamaAdapter

ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, BertAdapter, DistilBertAdapter, LlamaAdapter, GPTNeoXAdapter)
_BY_TYPE: dict[str, type[Adapter]] = {t: a for a in ADAPTERS for t in a.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_BY_TYPE))


def adapter_class_for(model_type: str) -> type[Adapter]:
    """The adapter class for a config's ``model_type``; a clear error for anything else."""
    try:
        return _BY_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unsupported architecture '{model_type}'; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def adapter_for(model: nn.Module) -> Adapter:
    return adapter_class_for(model.config.model_type)(model)


__all__ = ["ADAPTERS", "SUPPORTED_MODEL_TYPES", "Adapter", "adapter_class_for", "adapter_for"]
