"""Typed edges and exact edge patching (path patching) on the open intervention graph.

An edge is (sender component, receiver input): a sender's write to the residual stream
(a head: its slice of the output-projection input times that slice's rows of the
projection weight; an MLP: its output) delivered to one receiver input: one head's q, k
or v (k and v on the key/value head with grouped-query attention), one MLP's input, or
the logits (the residual stream before the final norm). In pre-LN models a receiver
input is the sum of the writes of everything upstream, so patching an edge means: the
receiver reads ``clean stream + (ablated write - clean write of the sender)``, every other
input of every other receiver stays clean. Ablated writes come from the run's
``Replacement`` (zero, mean, resample, patching).

Batching: many edges run in one forward pass, edge j on its own block of batch rows;
edges are grouped by receiver layer, so each pass starts at that layer from the cached
clean prefix (``prefix.py``), and positions the metric cannot see are trimmed. A multi-token
task's prompt has two rows (``Batch.rows_of``): its edge is patched on both, each with the
sender's write on that row's tokens, and read as the prompt's one metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.graph import QKV, Intervention, Site, check_edges_supported, intervene
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.prefix import block_outputs, needed_width, repeat_rows, start_at, trim
from circuitdiff.interventions.readout import metric
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, rows_per_forward
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

LOGITS = "logits"


@dataclass(frozen=True, order=True)
class Edge:
    """``sender`` -> the receiver input ``receiver`` (a q/k/v input, an MLP input or ``resid_final``)."""

    sender: Component
    receiver: Site

    @property
    def channel(self) -> str:
        """``q``, ``k`` or ``v`` for heads, ``input`` for an MLP and for the logits."""
        return self.receiver.channel or "input"

    def receiver_layer(self, n_layers: int) -> int:
        """The block the receiver sits in; the logits count as block ``n_layers``."""
        return n_layers if self.receiver.kind == "resid_final" else self.receiver.layer


def receiver_name(site: Site, grouped_query: bool) -> str:
    """``L3.H7`` for a head's q (and k/v without GQA), ``L3.KV1`` for a key/value head, ``L3.MLP``, ``logits``."""
    if site.kind == "resid_final":
        return LOGITS
    if site.kind == "mlp_input":
        return f"L{site.layer}.MLP"
    if grouped_query and site.kind in ("k_input", "v_input"):
        return f"L{site.layer}.KV{site.index}"
    return f"L{site.layer}.H{site.index}"


def receiver_sites(adapter: Adapter) -> list[Site]:
    """Every receiver input in forward order: per layer q, k, v of each head, then the MLP input; then the logits."""
    sites: list[Site] = []
    for layer in range(adapter.n_layers):
        for channel in QKV:
            n = adapter.n_heads if channel == "q" else adapter.n_kv_heads
            sites.extend(Site(f"{channel}_input", layer, h) for h in range(n))
        sites.append(Site("mlp_input", layer))
    sites.append(Site("resid_final"))
    return sites


def reads(adapter: Adapter, sender: Component, receiver: Site) -> bool:
    """Whether ``receiver``'s input contains ``sender``'s write."""
    if receiver.kind == "resid_final" or receiver.layer > sender.layer:  # the logits read everything
        return True
    # same layer: only the MLP reads its own layer's heads, and not with a parallel residual
    return receiver.layer == sender.layer and receiver.kind == "mlp_input" and sender.head is not None \
        and not adapter.parallel_attention_mlp


def all_edges(adapter: Adapter, senders: Sequence[Component] | None = None) -> list[Edge]:
    """Every edge of the model's graph (senders: every head and MLP unless given)."""
    check_edges_supported(adapter)
    senders = adapter.components() if senders is None else senders
    receivers = receiver_sites(adapter)
    return [Edge(s, r) for s in senders for r in receivers if reads(adapter, s, r)]


@torch.no_grad()
def sender_writes(adapter: Adapter, cache: ActivationCache, replacement: Replacement, senders: Sequence[Component],
                  rows: torch.Tensor, width: int | None = None) -> dict[Component, torch.Tensor]:
    """(ablated - clean) write to the residual stream of each sender, (len(rows), width, d_model):
    ``Adapter.residual_write`` of the output change, from the clean run (``sublayer_base``).

    ``cache`` holds the base run's own activations, and it and ``replacement`` count batch rows
    (``Batch.rows_of``: both branches of a multi-token task), as ``rows`` does.
    """
    out: dict[Component, torch.Tensor] = {}
    for c in dict.fromkeys(senders):
        clean = cache.of(c)[rows]
        target = replacement.values(c, rows)
        delta = -clean if target is None else target.to(clean) - clean
        delta = delta[:, :width] if width is not None else delta
        base = None if adapter.write_is_linear else sublayer_base(cache, c, rows, width)
        out[c] = adapter.residual_write(c, delta, base)
    return out


def sublayer_base(cache: ActivationCache, c: Component, rows: torch.Tensor, width: int | None) -> torch.Tensor:
    """The clean output of ``c``'s whole sublayer (every head's slice of the output-projection input, or the
    MLP's output): what a non-linear write (``Adapter.write_is_linear`` False) is taken from."""
    x = cache.mlps[c.layer] if c.head is None else cache.heads[c.layer].flatten(-2)
    x = x[rows]
    return x[:, :width] if width is not None else x


def patched_metric(adapter: Adapter, batch: Batch, interventions: Sequence[Intervention]) -> torch.Tensor:
    """Per-prompt metric under the interventions (``readout.metric``)."""
    with torch.no_grad(), intervene(adapter, interventions):
        return metric(adapter, batch, adapter.final_hidden(batch.input_ids, batch.attention_mask))


def edge_intervention(edge: Edge, rows: torch.Tensor, write: torch.Tensor) -> Intervention:
    """Deliver ``write`` (the sender's ablated-minus-clean write) to the edge's receiver on ``rows`` only."""
    return Intervention(edge.receiver, rows, lambda x, d=write: x + d.to(x))


@torch.no_grad()
def exact_edge_metrics(
    adapter: Adapter,
    base: Batch,
    base_cache: ActivationCache,
    replacement: Replacement,
    edges: Sequence[Edge],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_edges_per_pass: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Metric per prompt with each edge patched alone: (len(edges), n_prompts)."""
    out = torch.empty(len(edges), len(base))
    if not edges:
        return out
    check_edges_supported(adapter)
    device = base.input_ids.device
    widths = needed_width(adapter, base).cpu()
    order = torch.argsort(widths, stable=True)
    seq, b = base.input_ids.shape[1], base.branches  # b rows per prompt
    n_senders = len({e.sender for e in edges})
    writes_per_prompt = b * n_senders * seq * adapter.d_model * next(adapter.model.parameters()).element_size()
    step = max(1, min(rows_per_forward(adapter, seq, memory_budget) // b, memory_budget // writes_per_prompt))
    by_layer: dict[int, list[int]] = {}
    for i, e in enumerate(edges):
        by_layer.setdefault(e.receiver_layer(adapter.n_layers), []).append(i)
    with fast_kernels(adapter):
        for start in range(0, len(base), step):
            prompts = order[start:start + step]
            width = int(widths[prompts].max())
            part = trim(base.select(prompts.to(device)), width)
            writes = sender_writes(adapter, base_cache, replacement, [e.sender for e in edges], base.rows_of(prompts),
                                   width)
            prefix = block_outputs(adapter, part, [layer - 1 for layer in by_layer if layer > 0])
            k_max = max(1, rows_per_forward(adapter, width, memory_budget) // (b * len(prompts)))
            if max_edges_per_pass is not None:
                k_max = min(k_max, max_edges_per_pass)
            for layer, idx in sorted(by_layer.items()):
                for g in range(0, len(idx), k_max):
                    group = idx[g:g + k_max]
                    _run_edges(adapter, part, prompts, edges, group, writes, prefix.get(layer - 1), layer, out)
                    if progress is not None:
                        progress(len(group) * len(prompts) / len(base))
    return out


def _run_edges(adapter: Adapter, part: Batch, prompts: torch.Tensor, edges: Sequence[Edge], group: list[int],
               writes: dict[Component, torch.Tensor], prefix: object, layer: int, out: torch.Tensor) -> None:
    m, k = len(part), len(group)
    device = part.input_ids.device
    stacked = part.repeat(k)  # variant j: prompts j*m .. (j+1)*m - 1, all their branches' rows
    ivs = [edge_intervention(edges[i], stacked.rows_of(torch.arange(j * m, (j + 1) * m, device=device)),
                             writes[edges[i].sender]) for j, i in enumerate(group)]
    with start_at(adapter, layer, repeat_rows(prefix, k, part.branches)):
        diff = patched_metric(adapter, stacked, ivs)
    out[torch.tensor(group)[:, None], prompts[None, :]] = diff.view(k, m).cpu()
