"""GPT-NeoX (Pythia): fused QKV, rotary, attention and MLP usually in parallel.

Edge sites: ``input_layernorm``'s input is the residual stream q, k and v read,
``post_attention_layernorm``'s the MLP's, ``gpt_neox.final_layer_norm``'s the logits'.
``query_key_value``'s output is viewed as (heads, 3 * d_head), so head h's channel c is
columns ``h * 3 * d_head + c * d_head + arange(d_head)``. With the parallel residual
(``use_parallel_residual``, Pythia's default) the MLP reads the block's *input*, so a
layer's heads send nothing to that layer's MLP; with the sequential one they do.
"""

from __future__ import annotations

from torch import nn

from circuitdiff.models.adapters.base import Adapter, get_submodule

_CHANNELS = ("q", "k", "v")


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    fused_qkv = True
    layers_path = "gpt_neox.layers"
    attn_out_path = "attention.dense"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.dense_4h_to_h"
    unembed_path = "lm_head"
    attn_norm_path = "input_layernorm"
    mlp_norm_path = "post_attention_layernorm"
    final_norm_path = "gpt_neox.final_layer_norm"
    tiny_mlp_ratio = 4

    @property  # type: ignore[override]
    def parallel_attention_mlp(self) -> bool:
        return bool(getattr(self.model.config, "use_parallel_residual", True))

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        module = get_submodule(self.blocks()[layer], "attention.query_key_value")
        return module, _CHANNELS.index(channel) * self.d_head, 3 * self.d_head
