"""OLMo 2: no pre-norm; q/k norms across all heads; sandwich norms after attention and MLP.

Attention and MLP read the raw residual stream, so their "norm" sites are the attention module
(whose ``hidden_states`` is the stream) and the MLP itself. ``q_norm``/``k_norm`` are RMSNorms
over every head's columns of ``q_proj``/``k_proj`` together: a head's q (k) is its columns of
``q_norm(q_proj(x))`` (``qkv_head``), so the q/k sites are the norms' outputs and EAP takes a
batched VJP through them (``qkv_linear`` False). Each sublayer's output is normalised before the
residual add (``post_attention_layernorm``, ``post_feedforward_layernorm``): ``sublayer_write``.
"""

from __future__ import annotations

import torch
from torch import nn

from circuitdiff.models.adapters.base import Adapter, get_submodule


class Olmo2Adapter(Adapter):
    family = "olmo2"
    model_types = ("olmo2",)
    layers_path = "model.layers"
    attn_out_path = "self_attn.o_proj"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.down_proj"
    unembed_path = "lm_head"
    attn_norm_path = "self_attn"
    mlp_norm_path = "mlp"
    final_norm_path = "model.norm"
    post_attn_norm_path = "post_attention_layernorm"
    post_mlp_norm_path = "post_feedforward_layernorm"
    qkv_linear = False
    tiny_kv_divisor = 2

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        path = "self_attn.v_proj" if channel == "v" else f"self_attn.{channel}_norm"
        return get_submodule(self.blocks()[layer], path), 0, self.d_head

    def attn_read(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        return resid

    def qkv_head(self, layer: int, channel: str, resid: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if channel == "v":
            return super().qkv_head(layer, channel, resid, cols)
        attn = get_submodule(self.blocks()[layer], "self_attn")
        proj, norm = getattr(attn, f"{channel}_proj"), getattr(attn, f"{channel}_norm")
        return norm.forward(proj.forward(resid))[..., cols.to(resid.device)]
