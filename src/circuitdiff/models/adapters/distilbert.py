"""DistilBERT (masked LM): post-LayerNorm, separate q/k/v, ``ffn`` is the whole MLP."""

from __future__ import annotations

from typing import Any

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

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        from transformers import DistilBertConfig

        return DistilBertConfig(n_layers=n_layers, n_heads=n_heads, dim=d_model, hidden_dim=4 * d_model,
                                max_position_embeddings=64, vocab_size=vocab)
    edges_refusal = (f"edges are not defined for post-LayerNorm {family}: every sublayer's write is renormalised "
                     "together with the whole residual stream, so no receiver reads one sender's contribution additively")

    def head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.vocab_layer_norm(m.activation(m.vocab_transform(hidden)))
