"""Phi (1, 1.5, 2): one LayerNorm per block read by attention and MLP in parallel (as GPT-J),
separate q/k/v with bias, partial rotary, ``dense`` as the output projection, biased LM head.

Optional per-head q/k LayerNorms (``qk_layernorm``) act on each head's own columns after the
projections, so a head's q/k is still recomputed from its columns of ``q_proj``/``k_proj``.
"""

from __future__ import annotations

from circuitdiff.models.adapters.base import Adapter


class PhiAdapter(Adapter):
    family = "phi"
    model_types = ("phi",)
    parallel_attention_mlp = True
    mlp_reads_attn_norm = True
    layers_path = "model.layers"
    attn_out_path = "self_attn.dense"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.fc2"
    unembed_path = "lm_head"
    attn_norm_path = "input_layernorm"
    mlp_norm_path = "input_layernorm"
    qkv_path = "self_attn.{channel}_proj"
    final_norm_path = "model.final_layernorm"
    tiny_mlp_ratio = 4
    tiny_kwargs = {"qk_layernorm": True}
