"""What every architecture adapter provides: where the heads and MLPs live, and the read-out.

An adapter never re-implements the model. It names three hook points per layer:
the attention output projection (whose *input* is the concatenation of the heads'
outputs, so head ``h`` is the slice ``[h*d_head:(h+1)*d_head]``), the module whose
output is the MLP's contribution to the residual stream, and the modules that turn
the final hidden state into logits. For edges (``circuitdiff.interventions.graph``) it also
names the norms whose inputs are the residual stream that q/k/v, the MLP and the logits
read, and where each head's q, k and v columns sit in the projections; post-LN families
set ``edges_refusal`` instead.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from circuitdiff.errors import EdgesUnsupportedError
from circuitdiff.models.components import Component, all_components


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` that also accepts an empty path."""
    return root if not path else root.get_submodule(path)


class Adapter:
    """Base class: subclasses set the class attributes and override only their quirks."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    """``config.model_type`` values this adapter serves."""
    masked_lm: ClassVar[bool] = False
    post_layernorm: ClassVar[bool] = False
    """LayerNorm after the residual add (BERT): a component's write is normalised with the stream."""
    fused_qkv: ClassVar[bool] = False
    parallel_attention_mlp: ClassVar[bool] = False
    layers_path: ClassVar[str]
    """Path from the LM model to the ``ModuleList`` of blocks."""
    attn_out_path: ClassVar[str]
    """Path from a block to the attention output projection (Linear or Conv1D)."""
    mlp_out_path: ClassVar[str]
    """Path from a block to the module whose output is the MLP's contribution."""
    mlp_in_path: ClassVar[str | None] = None
    """Path from a block to the MLP's first module, which reads the (normed) residual stream position by
    position; None when the MLP is the single module at ``mlp_out_path``."""
    unembed_path: ClassVar[str]
    """Path from the LM model to the final vocabulary projection."""
    mlp_down_path: ClassVar[str | None] = None
    """Path from a block to the MLP's down projection: its input is the MLP's hidden activation
    (after the nonlinearity, and after the gate in gated MLPs), read for activation sparsity."""
    base_kwargs: ClassVar[dict[str, object]] = {"use_cache": False}
    """Extra keyword arguments for the base model's forward (decoders: no KV cache)."""
    # --- edge sites (see circuitdiff.interventions.graph); None where edges are refused ---
    attn_norm_path: ClassVar[str | None] = None
    """Path from a block to the norm whose *input* is the residual stream that q, k and v read."""
    mlp_norm_path: ClassVar[str | None] = None
    """Path from a block to the norm whose input is the residual stream that the MLP reads."""
    final_norm_path: ClassVar[str | None] = None
    """Path from the LM model to the final norm (its input is the residual stream the logits read)."""
    edges_refusal: ClassVar[str | None] = None
    """Why edges are not defined for this family (one line), or None where they are."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        config = model.config
        self.n_layers: int = config.num_hidden_layers
        self.n_heads: int = config.num_attention_heads
        self.d_model: int = config.hidden_size
        self.n_kv_heads: int = getattr(config, "num_key_value_heads", None) or self.n_heads
        d_attn = _in_features(self.attn_out(0))
        if d_attn % self.n_heads:
            raise ValueError(f"{self.family}: attention width {d_attn} not divisible by {self.n_heads} heads")
        self.d_head: int = d_attn // self.n_heads

    # --- structure -------------------------------------------------------------------
    @property
    def grouped_query_attention(self) -> bool:
        return self.n_kv_heads != self.n_heads

    def blocks(self) -> nn.ModuleList:
        return get_submodule(self.model, self.layers_path)  # type: ignore[return-value]

    def attn_out(self, layer: int) -> nn.Module:
        return get_submodule(self.blocks()[layer], self.attn_out_path)

    def mlp_out(self, layer: int) -> nn.Module:
        return get_submodule(self.blocks()[layer], self.mlp_out_path)

    def mlp_in(self, layer: int) -> nn.Module:
        return get_submodule(self.blocks()[layer], self.mlp_in_path or self.mlp_out_path)

    def mlp_down(self, layer: int) -> nn.Module | None:
        return None if self.mlp_down_path is None else get_submodule(self.blocks()[layer], self.mlp_down_path)

    def attn_norm(self, layer: int) -> nn.Module:
        return get_submodule(self.blocks()[layer], self._edge_path(self.attn_norm_path))

    def mlp_norm(self, layer: int) -> nn.Module:
        return get_submodule(self.blocks()[layer], self._edge_path(self.mlp_norm_path))

    def final_norm(self) -> nn.Module:
        return get_submodule(self.model, self._edge_path(self.final_norm_path))

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        """(module, offset, stride) of a q/k/v channel: head ``h``'s columns of the module's
        output are ``offset + h * stride + arange(d_head)``. ``k``/``v`` heads are key/value heads."""
        raise EdgesUnsupportedError(self.edges_refusal or f"{self.family}: no q/k/v projection map")

    def _edge_path(self, path: str | None) -> str:
        if path is None:
            raise EdgesUnsupportedError(self.edges_refusal or f"{self.family}: edges are not defined")
        return path

    def components(self) -> list[Component]:
        return all_components(self.n_layers, self.n_heads)

    def module_paths(self) -> dict[str, str]:
        """Canonical name -> where it is hooked, for docs and debugging."""
        paths: dict[str, str] = {}
        for c in self.components():
            block = f"{self.layers_path}.{c.layer}"
            if c.head is None:
                paths[c.name] = f"{block}.{self.mlp_out_path} (output)"
            else:
                lo = c.head * self.d_head
                paths[c.name] = f"{block}.{self.attn_out_path} (input[..., {lo}:{lo + self.d_head}])"
        return paths

    def quirks(self) -> dict[str, bool]:
        return {
            "masked_lm": self.masked_lm,
            "post_layernorm": self.post_layernorm,
            "grouped_query_attention": self.grouped_query_attention,
            "fused_qkv": self.fused_qkv,
            "parallel_attention_mlp": self.parallel_attention_mlp,
        }

    # --- read-out --------------------------------------------------------------------
    def final_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the final norm, (batch, seq, d_model): the LM head's input."""
        return self.base_forward(input_ids, attention_mask).last_hidden_state

    def base_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: object):  # noqa: ANN201
        """The base model's own forward (no LM head), e.g. with ``output_hidden_states``."""
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **self.base_kwargs, **kwargs)

    def head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """Whatever the LM head does before the vocabulary projection (identity for decoders)."""
        return hidden

    def unembed(self) -> nn.Linear:
        return get_submodule(self.model, self.unembed_path)  # type: ignore[return-value]

    def logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits from final hidden states ``(..., d_model)``: every vocabulary row, or only the
        rows ``vocab`` (long, ``(..., k)`` with ``hidden``'s leading shape), giving ``(..., k)``.

        The read-out every metric is meant to go through: the LM head's own transform runs in the
        model's dtype, then the hidden state and the unembedding rows are upcast so that the
        product and its sum accumulate in float32 whatever the model's dtype. Families whose read-out
        is not linear in the unembedding rows (Gemma's final soft-capping) override this method.
        """
        proj = self.unembed()
        x = self.head_transform(hidden).float()
        if vocab is None:
            out = x @ proj.weight.float().T
            return out if proj.bias is None else out + proj.bias.float()
        out = (x.unsqueeze(-2) * proj.weight[vocab].float()).sum(-1)
        return out if proj.bias is None else out + proj.bias[vocab].float()


def _in_features(module: nn.Module) -> int:
    """Input width of a Linear or of GPT-2's Conv1D (whose weight is stored transposed)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if weight is not None and hasattr(module, "nf"):  # transformers' Conv1D: weight (in, out)
        return int(weight.shape[0])
    raise TypeError(f"unsupported output projection type {type(module).__name__}")


def zero_head_in_weights(module: nn.Module, head: int, d_head: int) -> None:
    """Zero the weights that read head ``head``'s slice: the same as ablating it to zero.

    Used by the tests as the ground truth that the hook-based ablation must match.
    """
    sl = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight[:, sl] = 0
        else:
            module.weight[sl, :] = 0
