"""Granite (3.x): Llama's modules with four multipliers.

``residual_multiplier`` scales every sublayer's output before the residual add: the write of a
change (``residual_scale``). ``logits_scaling`` divides the logits (``logits``). The embedding
and attention multipliers act inside the model and need nothing here.
"""

from __future__ import annotations

import torch

from circuitdiff.models.adapters.llama import LlamaAdapter


class GraniteAdapter(LlamaAdapter):
    family = "granite"
    model_types = ("granite",)
    tiny_kwargs = {"residual_multiplier": 0.5, "logits_scaling": 4.0, "embedding_multiplier": 3.0,
                   "attention_multiplier": 0.25}

    @property
    def residual_scale(self) -> float:
        return float(self.model.config.residual_multiplier)

    def logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        return super().logits(hidden, vocab) / float(self.model.config.logits_scaling)
