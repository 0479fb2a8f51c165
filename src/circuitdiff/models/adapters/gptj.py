"""GPT-J: one LayerNorm per block (``ln_1``) read by attention and MLP in parallel, rotary on part of
each head, separate q/k/v without bias.

The MLP reads ``ln_1``'s output too (``mlp_reads_attn_norm``): its input receiver is ``ln_1``
recomputed from the intervened stream at the MLP's input. With the parallel residual a layer's
heads send nothing to that layer's MLP.
"""

from __future__ import annotations

from typing import Any

from circuitdiff.models.adapters.base import Adapter


class GPTJAdapter(Adapter):
    family = "gptj"
    model_types = ("gptj",)
    parallel_attention_mlp = True
    mlp_reads_attn_norm = True
    layers_path = "transformer.h"
    attn_out_path = "attn.out_proj"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.fc_out"
    unembed_path = "lm_head"
    attn_norm_path = "ln_1"
    mlp_norm_path = "ln_1"
    qkv_path = "attn.{channel}_proj"
    final_norm_path = "transformer.ln_f"

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        from transformers import GPTJConfig

        return GPTJConfig(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=64, rotary_dim=4,
                          vocab_size=vocab, bos_token_id=1, eos_token_id=1, pad_token_id=0)
