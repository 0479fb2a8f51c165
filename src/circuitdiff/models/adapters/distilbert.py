"""DistilBERT (masked LM): post-LayerNorm, separate q/k/v, ``ffn`` is the whole MLP."""

from __future__ import annotations

import torch

from circuitdiff.models.adapters.base import Adapter


class DistilBertAdapter(Adapter):
    family = "distilbert"
    model_types = ("distilbert",)
    masked_lm = True
    post_layernorm = True
    layers_path = "distilbert.transformer.layer"
    attn_out_path = "attention.out_lin"
    mlp_out_path = "ffn"
    mlp_down_path = "ffn.lin2"
    unembed_path = "vocab_projector"
    base_kwargs = {}  # encoders take no KV-cache flag
    edges_refusal = (f"edges are not defined for post-LayerNorm {family}: every sublayer's write is renormalised "
                     "together with the whole residual stream, so no receiver reads one sender's contribution additively")

    def head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.vocab_layer_norm(m.activation(m.vocab_transform(hidden)))
