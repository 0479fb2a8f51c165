"""The open intervention graph: named hook sites, one vocabulary for every family.

Sites (``l`` a layer, ``h`` a query head, ``g`` a key/value head; g = h without grouped-query
attention), each a tensor with a batch row per prompt copy:

* ``blocks.{l}.resid_pre``        (b, s, d_model) residual stream entering block l
* ``blocks.{l}.attn.q_input.{h}`` (b, s, d_model) the residual stream *as head h's query reads it*
* ``blocks.{l}.attn.k_input.{g}`` / ``v_input.{g}`` the same for key/value head g
* ``blocks.{l}.attn.head_out.{h}`` (b, s, d_head) head h's slice of the output-projection input
* ``blocks.{l}.mlp.input``        (b, s, d_model) the residual stream the MLP reads (pre-norm)
* ``blocks.{l}.mlp.output``       (b, s, d_model) the MLP's write to the residual stream
* ``resid_final``                 (b, s, d_model) the residual stream before the final norm

A q/k/v input site is what makes edges possible: every head reads the same residual
stream, so changing what *one* head's query reads cannot be done by editing the stream.
The hook on the real attention norm records its input; the hook on the real q/k/v
projection then recomputes only that head's columns from the intervened input and from the
clean one, with the real norm (``module.forward``, so no hook fires twice) and that head's
columns of the real projection's weight and bias, and adds the difference to the projection's
own output: an intervention that changes nothing changes nothing, bit for bit, in any dtype. Each adapter
says where its norms are and which projection columns a head's q, k, v occupy. Post-LN
families (BERT, DistilBERT) refuse, with the adapter's one-line reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from circuitdiff.errors import EdgesUnsupportedError
from circuitdiff.interventions.hooks import SequenceView
from circuitdiff.interventions.norm_vjp import HeadFactors, fold_weight, head_factors, norm_kind, projection_offset
from circuitdiff.models.adapters.base import Adapter, in_out_weight
from circuitdiff.models.components import Component

QKV = ("q", "k", "v")
RECEIVER_INPUTS = ("q_input", "k_input", "v_input", "mlp_input", "resid_final")
"""Sites that need the adapter's norm map (refused for post-LN families)."""
_SITE = re.compile(r"^(?:blocks\.(\d+)\.(resid_pre|attn\.(q_input|k_input|v_input|head_out)\.(\d+)|mlp\.(input|output))"
                   r"|(resid_final))$")

Value = torch.Tensor | None | Callable[[torch.Tensor], torch.Tensor]
"""A replacement (broadcast to (rows, seq, width)), None for zeros, or a function of the current value."""


@dataclass(frozen=True, order=True)
class Site:
    """One named hook site; ``index`` is the head (or key/value head) for attention sites."""

    kind: str
    layer: int = -1
    index: int = -1

    @property
    def name(self) -> str:
        if self.kind == "resid_final":
            return "resid_final"
        if self.kind == "resid_pre":
            return f"blocks.{self.layer}.resid_pre"
        if self.kind in ("mlp_input", "mlp_output"):
            return f"blocks.{self.layer}.mlp.{self.kind[4:]}"
        return f"blocks.{self.layer}.attn.{self.kind}.{self.index}"

    @property
    def channel(self) -> str | None:
        return self.kind[0] if self.kind in ("q_input", "k_input", "v_input") else None

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Site:
        m = _SITE.match(name)
        if m is None:
            raise ValueError(f"not a site name: {name!r} (e.g. 'blocks.3.attn.q_input.7', 'blocks.3.mlp.input')")
        if m.group(6):
            return cls("resid_final")
        layer = int(m.group(1))
        if m.group(2) == "resid_pre":
            return cls("resid_pre", layer)
        if m.group(5):
            return cls(f"mlp_{m.group(5)}", layer)
        return cls(m.group(3), layer, int(m.group(4)))

    @classmethod
    def output_of(cls, component: Component) -> Site:
        if component.head is None:
            return cls("mlp_output", component.layer)
        return cls("head_out", component.layer, component.head)


@dataclass(frozen=True)
class Intervention:
    """Set ``site`` on batch ``rows`` to ``value``: a tensor, None (zeros), or a function of the current value."""

    site: Site
    rows: torch.Tensor
    value: Value = None


class HeadWeights:
    """Each head's columns of a q/k/v projection as a contiguous (heads, d_head, d_model) block,
    and one scratch buffer for the cotangents: made once per scoring run, reused across its
    layers and IG steps (on CPU a fresh large tensor costs its page faults, and the column
    gather would be repeated per step). Weights must not change while one is in use."""

    def __init__(self) -> None:
        self._weights: dict[tuple[int, int], torch.Tensor] = {}
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}
        self._scratch: torch.Tensor | None = None

    def weight(self, key: tuple[int, int], module: nn.Module, cols: torch.Tensor,
               fold: nn.Module | None = None) -> torch.Tensor:
        """The heads' (n, d_head, d_model) weights; with ``fold`` that norm folded in (``norm_vjp.fold_weight``)."""
        if key not in self._weights:
            w, _ = in_out_weight(module)
            heads = w.detach()[:, cols.to(w.device)].permute(1, 2, 0).contiguous()
            self._weights[key] = heads if fold is None else fold_weight(fold, heads)
        return self._weights[key]

    def offset(self, key: tuple[int, int], module: nn.Module, cols: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``norm_vjp.projection_offset`` of these heads, (n, d_head)."""
        if key not in self._offsets:
            w, bias = in_out_weight(module)
            heads = w.detach()[:, cols.to(w.device)].permute(1, 2, 0)
            self._offsets[key] = projection_offset(norm, heads, None if bias is None else bias[cols.to(bias.device)])
        return self._offsets[key]

    def scratch(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        s = self._scratch
        if s is None or s.shape != shape or s.dtype != like.dtype or s.device != like.device:
            s = self._scratch = torch.empty(shape, dtype=like.dtype, device=like.device)
        return s


@dataclass
class SplitInputs:
    """With ``split=True``: what a backward pass needs to give every receiver input its own gradient.

    ``mlp[layer]`` and ``final`` are (b, s, d_model) tensors whose ``.grad`` is
    d(objective)/d(that receiver's input). For q/k/v the forward pass is left untouched:
    the projection's output keeps its gradient, and ``qkv_grads`` turns the gradient at
    each head's columns into the gradient at that head's own input, through the
    projection's columns and the norm, for all heads of a layer at once (no per-head copy of
    the norm's forward pass: that was the cost).
    """

    mlp: dict[int, torch.Tensor] = field(default_factory=dict)
    final: torch.Tensor | None = None
    projections: dict[tuple[int, str], tuple[nn.Module, torch.Tensor]] = field(default_factory=dict)
    resid: dict[int, torch.Tensor] = field(default_factory=dict)
    norms: dict[int, nn.Module] = field(default_factory=dict)
    columns: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    adapter: Adapter | None = None

    def qkv_grads(self, layer: int, reuse: HeadWeights | None = None) -> torch.Tensor:
        """d(objective)/d(each head's q, k, v input), after ``backward``: (n_q + 2 n_kv, b, s, d_model).

        Rows are the q heads, then the k heads, then the v heads (key/value heads with GQA).
        LayerNorm and RMSNorm take their VJP in closed form for all heads at once
        (``qkv_factors``); any other norm takes one batched VJP of the real module
        (``is_grads_batched``: autograd vmaps its backward over the heads' cotangents), so
        the norm runs forward once, not once per head. ``reuse`` keeps the head weights
        and the scratch buffer between calls.
        """
        reuse = reuse if reuse is not None else HeadWeights()
        factors = self.qkv_factors(layer, reuse)
        x = self.resid[layer]
        if factors is not None:
            return factors.materialize().view(-1, *x.shape)  # float32 or wider, whatever the model's dtype
        if self.adapter is not None and not self.adapter.qkv_linear:
            return self._composite_grads(layer)
        parts = self._by_projection(layer)
        shape = (sum(len(cols) for _, _, cols in parts), x.shape[0] * x.shape[1], x.shape[2])
        cotangents, row = None, 0
        for i, (module, output, cols) in enumerate(parts):
            weight = reuse.weight((layer, i), module, cols)
            cotangents = reuse.scratch(shape, weight) if cotangents is None else cotangents
            with torch.no_grad():
                torch.bmm(_head_columns(output.grad, cols).to(weight.dtype), weight, out=cotangents[row:row + len(cols)])
            row += len(cols)
        assert cotangents is not None
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            normed = self.norms[layer].forward(x)
            (g,) = torch.autograd.grad(normed, x, cotangents.view(-1, *x.shape).to(normed.dtype),
                                       is_grads_batched=True)
        return g

    def _composite_grads(self, layer: int) -> torch.Tensor:
        """``qkv_grads`` where a head's q/k/v is not a column slice of one Linear of the normed stream
        (``Adapter.qkv_linear`` False): one batched VJP per channel of the adapter's own ``qkv_head``
        over all of that channel's columns, each head's cotangent its gradient at its own columns."""
        assert self.adapter is not None
        x = self.resid[layer].detach().requires_grad_(True)
        out = []
        for channel in QKV:
            _, output = self.projections[(layer, channel)]
            if output.grad is None:
                raise RuntimeError(f"no gradient reached layer {layer}'s {channel} projection")
            cols = self.columns[(layer, channel)]
            every = cols.flatten()
            cot = torch.zeros(len(cols), *x.shape[:-1], len(every), dtype=output.dtype, device=output.device)
            for i, c in enumerate(cols):
                cot[i, ..., i * cols.shape[1]:(i + 1) * cols.shape[1]] = output.grad[..., c.to(output.device)]
            with torch.enable_grad():
                y = self.adapter.qkv_head(layer, channel, x, every)
                (g,) = torch.autograd.grad(y, x, cot.to(y.dtype), is_grads_batched=True)
            out.append(g)
        return torch.cat(out)

    def qkv_factors(self, layer: int, reuse: HeadWeights) -> HeadFactors | None:
        """``qkv_grads`` before its big product, for a LayerNorm or RMSNorm (else None): factors that
        add up over IG steps (``norm_vjp.HeadFactors``)."""
        norm = self.norms[layer]
        if norm_kind(norm) is None or (self.adapter is not None and not self.adapter.qkv_linear):
            return None
        parts = self._by_projection(layer)
        folded = [reuse.weight((layer, i), module, cols, norm) for i, (module, _, cols) in enumerate(parts)]
        offsets = [reuse.offset((layer, i), module, cols, norm) for i, (module, _, cols) in enumerate(parts)]
        with torch.no_grad():
            reads = [_head_columns(out.detach(), cols) - offset[:, None] for (_, out, cols), offset in zip(parts, offsets)]
            grads = [_head_columns(out.grad, cols) for _, out, cols in parts]  # type: ignore[arg-type]
            return head_factors(norm, self.resid[layer], grads, folded, reads)

    def _by_projection(self, layer: int) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
        """(module, its output, the head columns it serves) in q, k, v order: one entry for a fused
        projection (GPT-2's ``c_attn``, GPT-NeoX's ``query_key_value``), three for Llama's."""
        out: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        for channel in QKV:
            module, output = self.projections[(layer, channel)]
            if output.grad is None:
                raise RuntimeError(f"no gradient reached layer {layer}'s {channel} projection")
            cols = self.columns[(layer, channel)]
            if out and out[-1][0] is module:
                out[-1] = (module, output, torch.cat([out[-1][2], cols]))
            else:
                out.append((module, output, cols))
        return out

    def qkv_grad(self, layer: int, channel: str) -> torch.Tensor:
        """One channel's rows of ``qkv_grads``: (n heads of that channel, b, s, d_model)."""
        sizes = [len(self.columns[(layer, c)]) for c in QKV]
        return self.qkv_grads(layer).split(sizes)[QKV.index(channel)]


def _head_columns(values: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A projection's output (or its gradient) at the head columns ``cols`` (n, d_head), as (n, b*s, d_head)."""
    return values[..., cols.to(values.device)].flatten(0, 1).transpose(0, 1)


def check_edges_supported(adapter: Adapter, context: str = "") -> None:
    """Raise ``EdgesUnsupportedError`` with the family's one-line reason (after ``context``) where edges are refused."""
    if adapter.edges_refusal is not None:
        raise EdgesUnsupportedError(f"{context}{adapter.edges_refusal}")


def head_columns(adapter: Adapter, layer: int, channel: str, head: int) -> tuple[nn.Module, torch.Tensor]:
    """The projection module of a q/k/v channel and head ``head``'s output columns in it."""
    module, _, _ = adapter.qkv_projection(layer, channel)
    return module, adapter.qkv_columns(layer, channel, head)


def n_channel_heads(adapter: Adapter, channel: str) -> int:
    return adapter.n_heads if channel == "q" else adapter.n_kv_heads


def _apply(value: Value, current: torch.Tensor) -> torch.Tensor:
    if value is None:
        return torch.zeros_like(current)
    if callable(value):
        return value(current).to(current)
    return value.to(current).expand_as(current)


def _write_rows(x: torch.Tensor, todo: Sequence[Intervention]) -> torch.Tensor:
    """A copy of ``x`` with each intervention's rows replaced, in order."""
    x = x.clone()
    for iv in todo:
        rows = iv.rows.to(x.device)
        x[rows] = _apply(iv.value, x[rows])
    return x


@contextmanager
def intervene(adapter: Adapter, interventions: Sequence[Intervention] = (), *,
              split: bool = False) -> Iterator[SplitInputs]:
    """Install hooks on the real modules for a ``with`` block; yields the split receiver inputs.

    Interventions on one site apply in the given order (a function sees earlier ones' result).
    ``split`` keeps what a backward pass needs to give every receiver input (each head's
    q/k/v input, each MLP input, the final residual stream) its own gradient, for edge
    attribution; it leaves the forward computation unchanged.
    """
    by_site: dict[Site, list[Intervention]] = defaultdict(list)
    for iv in interventions:
        by_site[iv.site].append(iv)
    if split or any(s.kind in RECEIVER_INPUTS for s in by_site):
        check_edges_supported(adapter)
    if split and any(s.kind in RECEIVER_INPUTS for s in by_site):
        raise ValueError("split receiver inputs cannot be combined with interventions on receiver inputs")
    split_inputs = SplitInputs(adapter=adapter)
    handles: list[Any] = []
    view = SequenceView(adapter)
    try:
        for layer in range(adapter.n_layers):
            handles.extend(_layer_hooks(adapter, layer, by_site, split, split_inputs, view))
        final = by_site.get(Site("resid_final"), [])
        if final or split:
            hook = _input_hook(final, split, lambda x: setattr(split_inputs, "final", x))
            handles.append(adapter.final_norm().register_forward_pre_hook(hook, with_kwargs=True))
        yield split_inputs
    finally:
        view.remove()
        for h in handles:
            h.remove()


def _layer_hooks(adapter: Adapter, layer: int, by_site: dict[Site, list[Intervention]], split: bool,
                 split_inputs: SplitInputs, view: SequenceView) -> list[Any]:
    handles: list[Any] = []
    block = adapter.blocks()[layer]
    resid = by_site.get(Site("resid_pre", layer))
    if resid:
        handles.append(block.register_forward_pre_hook(_resid_pre_hook(resid), with_kwargs=True))
    qkv = {s: v for s, v in by_site.items() if s.layer == layer and s.channel is not None}
    mlp_in = by_site.get(Site("mlp_input", layer), [])
    shared = adapter.mlp_reads_attn_norm and bool(mlp_in or split)
    seen: dict[str, torch.Tensor] = {}
    if qkv or split or shared:  # the stream the attention reads, as its norm (or the attention) receives it
        handles.append(adapter.attn_norm(layer).register_forward_pre_hook(
            lambda _m, args, kwargs: seen.__setitem__("resid", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True))
    if qkv or split:
        handles.extend(_qkv_hooks(adapter, layer, qkv, split, split_inputs, seen))
    if shared:
        hook = _shared_norm_hook(adapter, layer, mlp_in, split, split_inputs, seen)
        handles.append(adapter.mlp_in(layer).register_forward_pre_hook(hook))
    elif mlp_in or split:
        hook = _input_hook(mlp_in, split, lambda x: split_inputs.mlp.__setitem__(layer, x),
                           lambda x: view.of(layer, x))
        handles.append(adapter.mlp_norm(layer).register_forward_pre_hook(hook, with_kwargs=True))
    heads = [iv for s, ivs in by_site.items() if s.kind == "head_out" and s.layer == layer for iv in ivs]
    if heads:
        handles.append(adapter.attn_out(layer).register_forward_pre_hook(_head_out_hook(adapter, heads)))
    mlp_out = by_site.get(Site("mlp_output", layer))
    if mlp_out:
        handles.append(adapter.mlp_out(layer).register_forward_hook(_mlp_out_hook(mlp_out, lambda y: view.of(layer, y))))
    return handles


def _resid_pre_hook(todo: list[Intervention]) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (_write_rows(args[0], todo), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": _write_rows(kwargs["hidden_states"], todo)}

    return hook


def _input_hook(todo: list[Intervention], split: bool, keep: Callable[[torch.Tensor], None],
                sequences: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Callable[..., Any]:
    """Pre-hook (``with_kwargs``) on a module that only one receiver reads (the MLP's norm, the final one);
    ``sequences`` views its input as (batch, seq, d)."""

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        flat = args[0] if args else kwargs["hidden_states"]
        x = sequences(flat)
        x = _write_rows(x, todo) if todo else x.clone()
        if split and x.requires_grad:
            x.retain_grad()
        keep(x)
        x = SequenceView.back(x, flat)
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    return hook


def _shared_norm_hook(adapter: Adapter, layer: int, todo: list[Intervention], split: bool, split_inputs: SplitInputs,
                      seen: dict[str, torch.Tensor]) -> Callable[..., Any]:
    """Pre-hook on the MLP of a block whose one norm feeds attention and MLP (``mlp_reads_attn_norm``):
    the MLP's input is that norm recomputed from its own copy of the stream, intervened on ``todo``."""

    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = _write_rows(seen["resid"], todo) if todo else seen["resid"].clone()
        if split and x.requires_grad:
            x.retain_grad()
        split_inputs.mlp[layer] = x
        return (adapter.attn_read(layer, x).to(args[0].dtype), *args[1:])

    return hook


def _head_out_hook(adapter: Adapter, todo: list[Intervention]) -> Callable[..., Any]:
    n, d = adapter.n_heads, adapter.d_head

    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        out = x.clone()
        for iv in todo:
            rows, h = iv.rows.to(x.device), iv.site.index
            view = out.unflatten(-1, (n, d))
            view[rows, :, h] = _apply(iv.value, view[rows, :, h])
        return (out, *args[1:])

    return hook


def _mlp_out_hook(todo: list[Intervention], sequences: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: tuple, output: Any) -> Any:
        flat = output[0] if isinstance(output, tuple) else output
        y = SequenceView.back(_write_rows(sequences(flat), todo), flat)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    return hook


def _qkv_hooks(adapter: Adapter, layer: int, qkv: dict[Site, list[Intervention]], split: bool,
               split_inputs: SplitInputs, seen: dict[str, torch.Tensor]) -> list[Any]:
    """Rewrite the q/k/v module's columns of intervened heads from their intervened stream (``seen``
    holds the stream the attention read, recorded by the caller's hook); with ``split`` keep them all."""
    handles: list[Any] = []
    modules: dict[int, tuple[nn.Module, list[str]]] = {}
    for channel in QKV:
        module, _, _ = adapter.qkv_projection(layer, channel)
        modules.setdefault(id(module), (module, []))[1].append(channel)
    for module, channels in modules.values():
        todo = [(s, iv) for s, ivs in qkv.items() if s.channel in channels for iv in ivs]
        if not (todo or split):
            continue

        def hook(mod: nn.Module, _args: tuple, output: torch.Tensor, channels: list[str] = channels,
                 todo: list[tuple[Site, Intervention]] = todo) -> torch.Tensor | None:
            resid = seen["resid"]
            if split:
                _keep_projection(adapter, layer, channels, mod, resid, output, split_inputs)
                return None
            out = output.clone()
            for site, iv in todo:
                rows = iv.rows.to(out.device)
                _, cols = head_columns(adapter, layer, site.channel or "", site.index)
                channel = site.channel or ""
                # the change of the head's columns, added to the model's own: exactly 0 for an unchanged input
                change = adapter.qkv_head(layer, channel, _apply(iv.value, resid[rows]), cols) \
                    - adapter.qkv_head(layer, channel, resid[rows], cols)
                part = out[rows]
                part[..., cols.to(out.device)] += change.to(out.dtype)
                out[rows] = part
            return out

        handles.append(module.register_forward_hook(hook))
    return handles


def _keep_projection(adapter: Adapter, layer: int, channels: list[str], module: nn.Module, resid: torch.Tensor,
                     output: torch.Tensor, split_inputs: SplitInputs) -> None:
    """Keep what ``SplitInputs.qkv_grad`` needs: the projection output (with its gradient), the stream, the norm."""
    if output.requires_grad:
        output.retain_grad()
    split_inputs.resid[layer] = resid.detach()
    split_inputs.norms[layer] = adapter.attn_norm(layer)
    for channel in channels:
        n = n_channel_heads(adapter, channel)
        split_inputs.projections[(layer, channel)] = (module, output)
        split_inputs.columns[(layer, channel)] = torch.stack([head_columns(adapter, layer, channel, h)[1]
                                                             for h in range(n)])
