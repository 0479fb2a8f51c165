"""Falcon (7B/40B/180B, Falcon 2, RW): fused q/k/v in three layouts, parallel or sequential blocks.

``query_key_value``'s output is, per position: with the new decoder architecture (40B, 180B,
Falcon 2) ``n_kv`` groups of ``[q_1 .. q_r | k | v]`` (r = n_heads / n_kv), so query head h sits
in group h // r at slot h % r and a group's k and v follow its queries (``qkv_columns``); with
multi-query (7B) ``[q_1 .. q_n | k | v]``; otherwise (RW) per head ``[q | k | v]``. Parallel blocks
read one LayerNorm (``input_layernorm``: ``mlp_reads_attn_norm``) or two (``ln_attn``, ``ln_mlp``);
sequential ones (RW) ``input_layernorm`` and ``post_attention_layernorm``. The block adds the
attention's output into the MLP's output tensor in place (``mlp_output_mutated``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from circuitdiff.models.adapters.base import Adapter, get_submodule

_CHANNELS = ("q", "k", "v")


class FalconAdapter(Adapter):
    family = "falcon"
    model_types = ("falcon",)
    fused_qkv = True
    mlp_output_mutated = True
    layers_path = "transformer.h"
    attn_out_path = "self_attention.dense"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.dense_4h_to_h"
    unembed_path = "lm_head"
    attn_norm_path = "input_layernorm"
    mlp_norm_path = "post_attention_layernorm"
    final_norm_path = "transformer.ln_f"
    tiny_kwargs = {"new_decoder_architecture": True, "num_kv_heads": 2, "bias": True}

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        config = model.config
        self.new_arch = bool(config.new_decoder_architecture)
        self.multi_query = bool(config.multi_query) and not self.new_arch
        if not self.new_arch:  # as FalconAttention counts them (the config's own count can disagree)
            self.n_kv_heads = 1 if self.multi_query else self.n_heads
        self.parallel_attention_mlp = self.new_arch or bool(config.parallel_attn)  # type: ignore[misc]
        if self.new_arch and getattr(config, "num_ln_in_parallel_attn", None) == 2:
            self.attn_norm_path, self.mlp_norm_path = "ln_attn", "ln_mlp"  # type: ignore[misc]
        elif self.parallel_attention_mlp:
            self.mlp_norm_path, self.mlp_reads_attn_norm = "input_layernorm", True  # type: ignore[misc]

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        from transformers import FalconConfig

        return FalconConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=d_model,
                            vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                            eos_token_id=1, **cls.tiny_kwargs)

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        module = get_submodule(self.blocks()[layer], "self_attention.query_key_value")
        c = _CHANNELS.index(channel)
        if self.new_arch:  # offset/stride of the group; qkv_columns places query heads inside it
            per_group = self.n_heads // self.n_kv_heads + 2
            return module, (per_group - 2 + c - 1) * self.d_head if c else 0, per_group * self.d_head
        if self.multi_query:
            return module, (0, self.n_heads, self.n_heads + 1)[c] * self.d_head, self.d_head
        return module, c * self.d_head, 3 * self.d_head

    def qkv_columns(self, layer: int, channel: str, head: int) -> torch.Tensor:
        if not (self.new_arch and channel == "q"):
            return super().qkv_columns(layer, channel, head)
        r = self.n_heads // self.n_kv_heads
        start = ((head // r) * (r + 2) + head % r) * self.d_head
        return torch.arange(start, start + self.d_head)
