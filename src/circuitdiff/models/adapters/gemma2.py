"""Gemma 2 and Gemma 3 (text): Llama's modules plus sandwich norms and soft-capping.

Each sublayer's output is normalised again before the residual add (``post_attention_layernorm``,
``post_feedforward_layernorm``), so a head's write is not its slice times ``o_proj``'s rows: the
adapter names the two norms and ``Adapter.sublayer_write`` takes a change's write through them,
from the sublayer's own output. The MLP reads ``pre_feedforward_layernorm``. Gemma 2 soft-caps the
final logits (``tanh(logits / c) * c``, in ``logits``) and the attention scores, which keeps
attention ``eager`` (``interventions.kernels``). Gemma 3's q/k norms act on each head's own columns,
after ``q_proj``/``k_proj``, so a head's q/k is still recomputed from its columns of those.
RMSNorms multiply by ``1 + weight``: recognised by behaviour (``norm_vjp.norm_spec``).
"""

from __future__ import annotations

from typing import Any

import torch

from circuitdiff.models.adapters.llama import LlamaAdapter


class Gemma2Adapter(LlamaAdapter):
    family = "gemma2"
    model_types = ("gemma2", "gemma3_text")
    mlp_norm_path = "pre_feedforward_layernorm"
    post_attn_norm_path = "post_attention_layernorm"
    post_mlp_norm_path = "post_feedforward_layernorm"
    tiny_kwargs = {"final_logit_softcapping": 3.0, "attn_logit_softcapping": 5.0, "query_pre_attn_scalar": 8}

    @classmethod
    def tiny_config(cls, model_type: str | None = None, **kwargs: int) -> Any:
        config = super().tiny_config(model_type, **kwargs)
        if model_type == "gemma3_text":  # Gemma 3 dropped attention soft-capping
            config.attn_logit_softcapping = None
        return config

    def logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        out = super().logits(hidden, vocab)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return out if cap is None else torch.tanh(out / cap) * cap
