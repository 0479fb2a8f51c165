"""GPT-2 and DistilGPT2: pre-LayerNorm, fused QKV in a Conv1D, tied unembedding."""

from __future__ import annotations

from circuitdiff.models.adapters.base import Adapter


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    fused_qkv = True
    layers_path = "transformer.h"
    attn_out_path = "attn.c_proj"
    mlp_out_path = "mlp"
    unembed_path = "lm_head"
