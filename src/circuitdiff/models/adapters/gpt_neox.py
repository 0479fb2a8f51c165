"""GPT-NeoX (Pythia): fused QKV, rotary, attention and MLP usually in parallel."""

from __future__ import annotations

from circuitdiff.models.adapters.base import Adapter


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    fused_qkv = True
    layers_path = "gpt_neox.layers"
    attn_out_path = "attention.dense"
    mlp_out_path = "mlp"
    unembed_path = "lm_head"

    @property  # type: ignore[override]
    def parallel_attention_mlp(self) -> bool:
        return bool(getattr(self.model.config, "use_parallel_residual", True))
