"""Llama family (Llama, Mistral, Qwen2/3, SmolLM): RMSNorm, rotary, grouped-query attention.

With grouped-query attention several query heads share one key/value head; a head
here is a *query* head, whose output is its own slice of ``o_proj``'s input.
"""

from __future__ import annotations

from circuitdiff.models.adapters.base import Adapter


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    layers_path = "model.layers"
    attn_out_path = "self_attn.o_proj"
    mlp_out_path = "mlp"
    unembed_path = "lm_head"
