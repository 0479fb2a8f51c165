"""StarCoder2: Llama's layout with LayerNorms, biases and a two-layer MLP (``c_fc``, ``c_proj``)."""

from __future__ import annotations

from circuitdiff.models.adapters.llama import LlamaAdapter


class Starcoder2Adapter(LlamaAdapter):
    family = "starcoder2"
    model_types = ("starcoder2",)
    mlp_down_path = "mlp.c_proj"
    tiny_mlp_ratio = 4
