"""Phi-3 (and Phi-3.5, Phi-4 mini): Llama's layout with fused ``qkv_proj`` and ``gate_up_proj``.

``qkv_proj``'s output is ``[q (n_heads * d_head) | k (n_kv * d_head) | v (n_kv * d_head)]``, each
split into heads, so query head h's columns start at ``h * d_head``, key/value head g's at
``n_heads * d_head + g * d_head`` (k) and ``(n_heads + n_kv) * d_head + g * d_head`` (v).
"""

from __future__ import annotations

from torch import nn

from circuitdiff.models.adapters.base import get_submodule
from circuitdiff.models.adapters.llama import LlamaAdapter


class Phi3Adapter(LlamaAdapter):
    family = "phi3"
    model_types = ("phi3",)
    fused_qkv = True

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        module = get_submodule(self.blocks()[layer], "self_attn.qkv_proj")
        offset = {"q": 0, "k": self.n_heads, "v": self.n_heads + self.n_kv_heads}[channel] * self.d_head
        return module, offset, self.d_head
