"""OPT: pre-LayerNorm (``do_layer_norm_before``, every size but 350m), separate q/k/v, no MLP module.

The MLP is ``fc1`` -> activation -> ``fc2`` inline in the block: ``fc2``'s output is its write,
``fc1`` reads the normed stream (``final_layer_norm`` of the block, not of the model). The block
flattens the stream to (batch * seq, d) rows before that norm (``mlp_rows_flat``). The model's
final norm is ``model.decoder.final_layer_norm``. OPT-350m normalises after the residual add and
projects 1024 -> 512 around the blocks: its edges are refused, as for BERT.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from circuitdiff.models.adapters.base import Adapter


class OPTAdapter(Adapter):
    family = "opt"
    model_types = ("opt",)
    layers_path = "model.decoder.layers"
    attn_out_path = "self_attn.out_proj"
    mlp_out_path = "fc2"
    mlp_in_path = "fc1"
    mlp_down_path = "fc2"
    unembed_path = "lm_head"
    attn_norm_path = "self_attn_layer_norm"
    mlp_norm_path = "final_layer_norm"
    qkv_path = "self_attn.{channel}_proj"
    final_norm_path = "model.decoder.final_layer_norm"
    mlp_rows_flat = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not getattr(model.config, "do_layer_norm_before", True):
            self.post_layernorm = True  # type: ignore[misc]
            self.edges_refusal = ("edges are not defined for post-LayerNorm opt (do_layer_norm_before=False): "  # type: ignore[misc]
                                  "every sublayer's write is renormalised together with the whole residual stream")

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        from transformers import OPTConfig

        activation = "gelu"  # OPT's ReLU kinks make EAP-IG's midpoint rule converge slowly in the completeness check
        return OPTConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=d_model,
                         ffn_dim=4 * d_model, word_embed_proj_dim=d_model, max_position_embeddings=64,
                         vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=1, activation_function=activation)
