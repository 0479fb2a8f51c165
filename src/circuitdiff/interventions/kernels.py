"""Faster kernels for the same functions, for every pass that reads the metric.

Two substitutions, each computing the function the model already computes (differences are
float rounding, ~1e-7 relative, and tests compare every family with the unchanged model):

* attention through PyTorch's fused ``scaled_dot_product_attention`` (transformers' own
  ``sdpa`` implementation) instead of ``eager``; circuitdiff loads models with ``eager`` so
  that the clean pass can return attention weights (from an eager pass of their own);
* GPT-2's ``gelu_new`` (eight elementwise passes written in Python) as PyTorch's fused
  ``gelu(approximate="tanh")``, the same formula (transformers' ``gelu_pytorch_tanh``).

Attention whose scores are soft-capped (Gemma 2's ``attn_logit_softcapping``) stays ``eager``:
fused SDPA has no cap, so switching would change the function (whatever ``_supports_sdpa`` says).
Both are undone in ``finally``. The modules themselves are not replaced or re-implemented.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers.activations import FastGELUActivation, NewGELUActivation

from circuitdiff.models.adapters.base import Adapter

_TANH_GELU = (NewGELUActivation, FastGELUActivation)


def _fused_tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def switches_attention(adapter: Adapter) -> bool:
    """Whether ``fast_kernels`` runs this model's attention through another kernel than its own
    (then attention weights, which only eager attention returns, need a pass of their own)."""
    model = adapter.model
    return bool(
        getattr(model.config, "_attn_implementation", None) == "eager"
        and getattr(model.config, "attn_logit_softcapping", None) is None
        and getattr(model, "_supports_sdpa", False)
        and hasattr(model, "set_attn_implementation")
        and getattr(model, "_can_set_attn_implementation", lambda: False)()
    )


@contextmanager
def fast_kernels(adapter: Adapter, enabled: bool = True) -> Iterator[None]:
    """Use fused attention and activation kernels inside the block; restore the model after.

    Every pass whose metric is compared with another runs inside it, the clean pass included
    (``readout``): metrics read under different kernels differ by float rounding, which an
    effect would carry as an offset. Nested use is a no-op.
    """
    model = adapter.model
    if not enabled:
        yield
        return
    old_attn = getattr(model.config, "_attn_implementation", None)
    switch = switches_attention(adapter)
    gelus = [m for m in model.modules() if type(m) in _TANH_GELU and "forward" not in m.__dict__]
    try:
        if switch:
            model.set_attn_implementation("sdpa")
        for m in gelus:
            m.forward = _fused_tanh_gelu  # type: ignore[method-assign]
        yield
    finally:
        for m in gelus:
            m.__dict__.pop("forward", None)
        if switch:
            model.set_attn_implementation(old_attn)
