"""What every architecture adapter provides: where the heads and MLPs live, and the read-out.

An adapter never re-implements the model. It names three hook points per layer:
the attention output projection (whose *input* is the concatenation of the heads'
outputs, so head ``h`` is the slice ``[h*d_head:(h+1)*d_head]``), the module whose
output is the MLP's contribution to the residual stream, and the modules that turn
the final hidden state into logits. For edges (``circuitdiff.interventions.graph``) it also
names the norms whose inputs are the residual stream that q/k/v, the MLP and the logits
read, and where each head's q, k and v columns sit in the projections; post-LN families
set ``edges_refusal`` instead.

An adapter is the single place a family's facts live: a subclass that sets ``model_types``
registers itself (``circuitdiff.models.adapters`` imports every module of the package), carries a
``tiny_config`` for the tests, and overrides the two operations whose defaults are linear:
``residual_write`` (a component's write to the residual stream: sandwich norms, residual
multipliers) and ``logits`` (the read-out: final soft-capping, logit scaling). See docs/families.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from circuitdiff.errors import EdgesUnsupportedError
from circuitdiff.models.components import Component, all_components


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` that also accepts an empty path."""
    return root if not path else root.get_submodule(path)


REGISTRY: dict[str, type[Adapter]] = {}
"""``config.model_type`` -> adapter class, filled by ``Adapter.__init_subclass__``."""


class Adapter:
    """Base class: subclasses set the class attributes and override only their quirks."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for model_type in cls.__dict__.get("model_types", ()):
            if model_type in REGISTRY and REGISTRY[model_type] is not cls:
                raise TypeError(f"model_type {model_type!r} claimed by {REGISTRY[model_type].__name__} and {cls.__name__}")
            REGISTRY[model_type] = cls

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
    post_attn_norm_path: ClassVar[str | None] = None
    """Path from a block to a norm between the attention output projection and the residual add
    (a sandwich norm: Gemma 2/3, OLMo 2), or None."""
    post_mlp_norm_path: ClassVar[str | None] = None
    """Path from a block to a norm between the MLP's output and the residual add, or None."""
    mlp_rows_flat: ClassVar[bool] = False
    """The MLP runs on (batch * seq, d) rows (OPT flattens the stream before its MLP norm): hooks view its
    tensors as (batch, seq, d) with the shape of the block's input (``hooks.sequence_view``)."""
    mlp_reads_attn_norm: ClassVar[bool] = False
    """The MLP reads the attention norm's output (one norm per block: GPT-J, Phi, Falcon-7B), so its
    input receiver is the MLP module's input recomputed by that norm from the intervened stream."""
    tiny_mlp_ratio: ClassVar[int] = 2
    tiny_kv_divisor: ClassVar[int] = 1
    """Query heads per key/value head in the tiny test model (2: grouped-query attention is exercised)."""
    tiny_kwargs: ClassVar[dict[str, object]] = {}
    """Config fields of this family's tiny test model beyond the common ones (``tiny_config``)."""

    @classmethod
    def tiny_config(cls, model_type: str | None = None, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                    vocab: int = 64) -> Any:
        """A tiny random configuration of this family (tests, examples): ``n_layers`` blocks, ``d_model``
        wide, token ids 0 (pad) and 1 (bos/eos) inside the vocabulary. Families whose config names
        differ from the Llama-style ones override this; the others set ``tiny_kwargs``."""
        from transformers import AutoConfig

        kwargs: dict[str, object] = dict(
            num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=d_model, head_dim=d_model // n_heads,
            intermediate_size=cls.tiny_mlp_ratio * d_model, max_position_embeddings=64, vocab_size=vocab,
            pad_token_id=0, bos_token_id=1, eos_token_id=1)
        if cls.tiny_kv_divisor > 1:
            kwargs["num_key_value_heads"] = n_heads // cls.tiny_kv_divisor
        kwargs.update(cls.tiny_kwargs)
        return AutoConfig.for_model(model_type or cls.model_types[0], **kwargs)

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

    qkv_path: ClassVar[str | None] = None
    """Path from a block to separate q/k/v projections, with ``{channel}`` for q, k or v (e.g.
    ``self_attn.{channel}_proj``); fused projections override ``qkv_projection`` instead."""

    def qkv_projection(self, layer: int, channel: str) -> tuple[nn.Module, int, int]:
        """(module, offset, stride) of a q/k/v channel: head ``h``'s columns of the module's
        output are ``offset + h * stride + arange(d_head)``. ``k``/``v`` heads are key/value heads."""
        if self.qkv_path is None or self.edges_refusal is not None:
            raise EdgesUnsupportedError(self.edges_refusal or f"{self.family}: no q/k/v projection map")
        return get_submodule(self.blocks()[layer], self.qkv_path.format(channel=channel)), 0, self.d_head

    def qkv_columns(self, layer: int, channel: str, head: int) -> torch.Tensor:
        """Head ``head``'s columns of its q/k/v module's output: ``offset + head * stride + arange(d_head)``
        from ``qkv_projection``; layouts that are not arithmetic in the head (Falcon's groups) override it."""
        _, offset, stride = self.qkv_projection(layer, channel)
        start = offset + head * stride
        return torch.arange(start, start + self.d_head)

    mlp_output_mutated: ClassVar[bool] = False
    """The block adds into the MLP's output tensor in place (Falcon: ``mlp_output += attention_output``):
    hooks hand the model a copy, so that what they record stays the MLP's output."""
    qkv_linear: ClassVar[bool] = True
    """Each head's q/k/v columns are a Linear (or Conv1D) of ``attn_read``'s output: the fast EAP path
    folds the norm into those columns. False where a norm spans the heads after the projection
    (OLMo 2's q/k norms): EAP then takes a batched VJP of ``qkv_head`` itself."""

    def attn_read(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """What the q/k/v projections read from the residual stream ``resid``: the attention norm's output
        (``forward``, so no hook fires)."""
        return self.attn_norm(layer).forward(resid)

    def qkv_head(self, layer: int, channel: str, resid: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Columns ``cols`` of the q/k/v module's output (``qkv_projection``) computed from the stream
        ``resid``: only those columns of the real projection's weight and bias, in float32 or wider (the
        caller takes a difference of two of them)."""
        module, _, _ = self.qkv_projection(layer, channel)
        weight, bias = in_out_weight(module)
        cols = cols.to(weight.device)
        wide = torch.promote_types(weight.dtype, torch.float32)
        out = self.attn_read(layer, resid).to(wide) @ weight[:, cols].to(wide)
        return out if bias is None else out + bias[cols].to(wide)

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

    # --- writes to the residual stream ---------------------------------------------------
    def residual_write(self, component: Component, delta: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """The change of the residual stream when ``component``'s output changes by ``delta``.

        ``delta`` is in the component's own space ((..., d_head) for a head, (..., d_model) for an
        MLP). Linear families (``write_is_linear``) need nothing else: a head's write is ``delta`` times
        its rows of the output projection, an MLP's is ``delta`` (times ``residual_scale``); no bias, it
        cancels in any change. Otherwise ``base`` is the whole sublayer's output before the change
        (attention: the output projection's input with every head, (..., n_heads * d_head); MLP: its
        output) and the write is ``sublayer_write``'s.
        """
        if component.head is not None and self.write_is_linear:
            weight, _ = in_out_weight(self.attn_out(component.layer))
            delta = delta.to(device=weight.device, dtype=weight.dtype)
            sl = slice(component.head * self.d_head, (component.head + 1) * self.d_head)
            return self._scaled(delta @ weight[sl])
        if component.head is not None:
            if base is None:
                raise ValueError(f"{self.family}: a head's write depends on its layer's other heads: pass base")
            full = torch.zeros_like(base)
            full.unflatten(-1, (self.n_heads, self.d_head))[..., component.head, :] = delta.to(base)
            delta = full
        return self.sublayer_write(component.layer, component.head is None, delta, base)

    @property
    def write_is_linear(self) -> bool:
        """A component's write is a linear function of its output alone (the output projection's rows
        for a head, the output itself for an MLP, times a constant). False with a sandwich norm: a
        change's write then depends on the whole sublayer's output, passed as ``base``."""
        return self.post_attn_norm_path is None and self.post_mlp_norm_path is None

    def sublayer_write(self, layer: int, mlp: bool, delta: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """The change of the residual stream when layer ``layer``'s attention (``mlp`` False: ``delta``
        and ``base`` are output-projection inputs) or MLP output changes by ``delta`` from ``base``:
        linear where no norm follows the sublayer, else that norm (the real module's ``forward``, so
        no hook fires) of the output after the change minus of the output before it."""
        post = self.post_mlp_norm_path if mlp else self.post_attn_norm_path
        if post is None and mlp:
            return self._scaled(delta)
        out = self.attn_out(layer)
        weight, _ = in_out_weight(out)
        if post is None:
            return self._scaled(delta.to(device=weight.device, dtype=weight.dtype) @ weight)
        if base is None:
            raise ValueError(f"{self.family}: a write through a sandwich norm depends on the sublayer's output: pass base")
        norm = get_submodule(self.blocks()[layer], post)
        base = base.to(device=weight.device, dtype=weight.dtype)
        after = base + delta.to(base)
        before, after = (base, after) if mlp else (out.forward(base), out.forward(after))
        return self._scaled(norm.forward(after) - norm.forward(before))

    @property
    def residual_scale(self) -> float:
        """What a sublayer's output is multiplied by before the residual add (Granite's
        ``residual_multiplier``; 1 elsewhere)."""
        return 1.0

    def _scaled(self, write: torch.Tensor) -> torch.Tensor:
        scale = self.residual_scale
        return write if scale == 1.0 else write * scale

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


def in_out_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight as (in, out), bias) of a Linear or of GPT-2's Conv1D (stored (in, out) already)."""
    if isinstance(module, nn.Linear):
        return module.weight.T, module.bias
    return module.weight, module.bias  # type: ignore[return-value]


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
