"""GPT-2 and DistilGPT2: pre-LayerNorm, fused QKV in a Conv1D, tied unembedding.

Edge sites: ``ln_1``'s input is the residual stream that q, k and v read, ``ln_2``'s the one
the MLP reads, ``transformer.ln_f``'s the one the logits read. ``c_attn``'s output is
``[q | k | v]``, each ``d_model`` wide and split into heads, so head h's q/k/v are columns
``c * d_model + h * d_head + arange(d_head)`` (c = 0, 1, 2); a receiver head's q, k or v is
recomputed from its own residual input by the real ``ln_1`` and ``c_attn``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from circuitdiff.models.adapters.base import Adapter, get_submodule

_CHANNELS = ("q", "k", "v")


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    fused_qkv = True
    layers_path = "transformer.h"
    attn_out_path = "attn.c_proj"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.c_proj"
    unembed_path = "lm_head"
    attn_norm_path = "ln_1"
    mlp_norm_path = "ln_2"
    final_norm_path = "transformer.ln_f"

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        from transformers import GPT2Config

        return GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=64, bos_token_id=1,
                          eos_token_id=1, vocab_size=vocab)

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        module = get_submodule(self.blocks()[layer], "attn.c_attn")
        return module, _CHANNELS.index(channel) * self.d_model, self.d_head
