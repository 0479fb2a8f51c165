"""Llama family (Llama, Mistral, Qwen2/3, SmolLM 1-3, Gemma): RMSNorm, rotary, grouped-query attention.

Gemma (1) has the same modules; its `(1 + weight)` RMSNorm is recognised by behaviour (`norm_vjp`),
its embedding scale runs inside the base model. SmolLM3 skips rotary on some layers, inside attention.

With grouped-query attention several query heads share one key/value head; a head
here is a *query* head, whose output is its own slice of ``o_proj``'s input.

Edge sites: ``input_layernorm``'s input is the residual stream q, k and v read,
``post_attention_layernorm``'s the MLP's, ``model.norm``'s the logits'. The q channel
belongs to a query head (columns of ``q_proj``); the k and v channels belong to a
*key/value* head (columns of ``k_proj``/``v_proj``), because that is where the model reads
them: delivering a sender to key/value head g changes the keys or values of every query
head in g's group at once, and an edge to it is named ``L{l}.KV{g}``. Rotary embeddings are
applied after the projections, so a patched k is rotated like a clean one.
"""

from __future__ import annotations

from circuitdiff.models.adapters.base import Adapter


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3", "gemma", "smollm3")
    layers_path = "model.layers"
    attn_out_path = "self_attn.o_proj"
    mlp_out_path = "mlp"
    mlp_down_path = "mlp.down_proj"
    unembed_path = "lm_head"
    attn_norm_path = "input_layernorm"
    mlp_norm_path = "post_attention_layernorm"
    qkv_path = "self_attn.{channel}_proj"
    final_norm_path = "model.norm"
    tiny_mlp_ratio = 3
    tiny_kv_divisor = 2  # grouped-query attention: 2 query heads per key/value head
