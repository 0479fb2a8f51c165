"""BERT (masked LM): post-LayerNorm; the MLP's write is ``output.dense`` before add-and-norm."""

from __future__ import annotations

import torch

from circuitdiff.models.adapters.base import Adapter


class BertAdapter(Adapter):
    family = "bert"
    model_types = ("bert",)
    masked_lm = True
    post_layernorm = True
    layers_path = "bert.encoder.layer"
    attn_out_path = "attention.output.dense"
    mlp_out_path = "output.dense"
    mlp_in_path = "intermediate"
    mlp_down_path = "output.dense"
    unembed_path = "cls.predictions.decoder"
    base_kwargs = {}  # encoders take no KV-cache flag
    tiny_mlp_ratio = 4
    edges_refusal = (f"edges are not defined for post-LayerNorm {family}: every sublayer's write is renormalised "
                     "together with the whole residual stream, so no receiver reads one sender's contribution additively")

    def head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.cls.predictions.transform(hidden)
