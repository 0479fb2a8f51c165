"""Edge circuits: selected by edge score, evaluated by actually running them.

Running a circuit means ablating every edge outside it at once: each receiver input reads
``live stream - sum over its ablated senders of (live write - ablated write)``, where a
sender's live write is what it writes *in this run* (its own inputs may be ablated too)
and its ablated write comes from the run's ``Replacement``. With every edge kept this is
the clean model; with one edge ablated it is exact edge patching (tested). Faithfulness
is what that run keeps of the clean metric, as for node circuits:
``metric(only the circuit) / clean``, and completeness is ``1 - metric(circuit ablated) / clean``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.edges import Edge, patched_metric, reads, receiver_name
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.graph import Intervention, Site
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.prefix import needed_width, trim
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, rows_per_forward
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

TOP_K = (20,)
"""Default edge-circuit sizes (top-k edges by |score|)."""
THRESHOLDS = (0.05,)
"""Default score thresholds, as a share of |clean metric|: edges with |score| >= t * |clean|."""


@dataclass(frozen=True)
class EdgeCircuit:
    """One selected edge set and what running it keeps."""

    method: str
    rule: str
    """``top-k`` or ``threshold``."""
    parameter: float
    edges: list[list[str]]
    """[sender, receiver, channel] triples."""
    size: int
    faithfulness: float
    completeness: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def select_top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k edges with the largest |score| (ties broken by edge order)."""
    order = np.argsort(-np.abs(scores), kind="stable")
    return sorted(order[: max(0, min(k, len(scores)))].tolist())


def select_threshold(scores: np.ndarray, threshold: float, clean: float) -> list[int]:
    """Indices of the edges with |score| >= threshold * |clean|."""
    return np.flatnonzero(np.abs(scores) >= threshold * abs(clean)).tolist()


def _replacement_writes(adapter: Adapter, cache: ActivationCache, replacement: Replacement,
                        senders: Sequence[Component], rows: torch.Tensor, width: int) -> dict[Component, torch.Tensor]:
    """Each sender's *ablated* output (its own space: d_head for a head, d_model for an MLP) on the
    cache's ``rows`` (``Batch.rows_of``)."""
    out = {}
    for c in senders:
        target = replacement.values(c, rows)
        clean = cache.of(c)[rows][:, :width]
        out[c] = torch.zeros_like(clean) if target is None else target[:, :width].to(clean)
    return out


def _stage(site: Site) -> tuple[int, str]:
    """Receivers that read the same senders: a layer's heads, a layer's MLP, the logits."""
    return (-1, "final") if site.kind == "resid_final" else (site.layer, "mlp" if site.kind == "mlp_input" else "attn")


def _circuit_interventions(adapter: Adapter, ablated: Sequence[Edge], ablated_out: dict[Component, torch.Tensor],
                           rows: torch.Tensor) -> list[Intervention]:
    """Record every sender's output, then subtract (live - ablated) writes of the ablated senders at each receiver.

    With linear writes a receiver that has most of its senders ablated subtracts the total over all
    its senders (one sum per stage, shared by the stage's receivers) and adds back the kept ones.
    Without (``Adapter.write_is_linear`` False) the ablated heads of one layer are one change of that
    layer's attention output (``Adapter.sublayer_write`` from its live output), so that ablating every
    edge is ablating every node.
    """
    components = adapter.components()
    live: dict[Component, torch.Tensor] = {}
    diffs: dict[object, torch.Tensor] = {}

    def recorder(c: Component) -> Callable[[torch.Tensor], torch.Tensor]:
        def keep(x: torch.Tensor) -> torch.Tensor:
            live[c] = x
            for key in [k for k in diffs if k == c or (isinstance(k, tuple) and k[0] == c.layer)]:
                del diffs[key]
            return x
        return keep

    def diff(c: Component) -> torch.Tensor:
        if c not in diffs:
            diffs[c] = adapter.residual_write(c, live[c] - ablated_out[c].to(live[c]))
        return diffs[c]

    def layer_diff(layer: int, heads: frozenset[int]) -> torch.Tensor:
        """live - ablated write of ``heads`` of ``layer`` together (non-linear writes)."""
        key = (layer, heads)
        if key not in diffs:
            parts = [live[Component(layer, h)] for h in range(adapter.n_heads)]
            now = torch.cat(parts, dim=-1)
            moved = torch.cat([ablated_out[Component(layer, h)].to(p) if h in heads else p for h, p in enumerate(parts)],
                              dim=-1)
            diffs[key] = -adapter.sublayer_write(layer, False, moved - now, now)
        return diffs[key]

    def nonlinear_removed(gone: set[Component]) -> torch.Tensor:
        total = None
        for layer in sorted({c.layer for c in gone}):
            heads = frozenset(c.head for c in gone if c.layer == layer and c.head is not None)
            parts = [layer_diff(layer, heads)] if heads else []
            mlp = Component(layer)
            if mlp in gone:
                parts.append(-adapter.sublayer_write(layer, True, ablated_out[mlp].to(live[mlp]) - live[mlp], live[mlp]))
            for part in parts:
                total = part if total is None else total + part
        assert total is not None
        return total

    by_receiver: dict[Site, set[Component]] = {}
    for e in ablated:
        by_receiver.setdefault(e.receiver, set()).add(e.sender)
    upstream = {_stage(r): [c for c in components if reads(adapter, c, r)] for r in by_receiver}
    totals: dict[tuple[int, str], torch.Tensor] = {}

    def removed(site: Site, gone: set[Component]) -> torch.Tensor:
        if not adapter.write_is_linear:
            return nonlinear_removed(gone)
        senders = upstream[_stage(site)]
        if 2 * len(gone) <= len(senders):
            return sum(diff(c) for c in senders if c in gone)  # type: ignore[return-value]
        key = _stage(site)
        if key not in totals:
            totals[key] = sum(diff(c) for c in senders)  # type: ignore[assignment]
        kept = [c for c in senders if c not in gone]
        return totals[key] - sum(diff(c) for c in kept) if kept else totals[key]

    ivs = [Intervention(Site.output_of(c), rows, recorder(c)) for c in components]
    for site, gone in by_receiver.items():
        ivs.append(Intervention(site, rows, lambda x, r=site, g=gone: x - removed(r, g).to(x)))
    return ivs


@torch.no_grad()
def ablated_edges_metric(adapter: Adapter, base: Batch, base_cache: ActivationCache, replacement: Replacement,
                         ablated: Sequence[Edge], memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Metric per prompt with every edge in ``ablated`` ablated at once, (n_prompts,)."""
    out = torch.empty(len(base))
    widths = needed_width(adapter, base).cpu()
    order = torch.argsort(widths, stable=True)
    step = max(1, rows_per_forward(adapter, base.input_ids.shape[1], memory_budget) // base.branches)
    senders = adapter.components()
    with fast_kernels(adapter):
        for start in range(0, len(base), step):
            prompts = order[start:start + step]
            width = int(widths[prompts].max())
            part = trim(base.select(prompts.to(base.input_ids.device)), width)
            ablated_out = _replacement_writes(adapter, base_cache, replacement, senders, base.rows_of(prompts), width)
            rows = torch.arange(part.input_ids.shape[0], device=part.input_ids.device)
            out[prompts] = patched_metric(adapter, part, _circuit_interventions(adapter, ablated, ablated_out, rows)).cpu()
    return out


def evaluate_edge_circuit(adapter: Adapter, base: Batch, base_cache: ActivationCache, replacement: Replacement,
                          edges: Sequence[Edge], keep: Sequence[int], clean: float, *, method: str, rule: str,
                          parameter: float, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> EdgeCircuit:
    """Run the circuit (every other edge ablated) and its complement (the circuit's edges ablated)."""
    kept = set(keep)
    outside = [e for i, e in enumerate(edges) if i not in kept]
    inside = [edges[i] for i in sorted(kept)]
    denom = clean if clean != 0 else float("nan")
    only = float(ablated_edges_metric(adapter, base, base_cache, replacement, outside, memory_budget).double().mean())
    without = float(ablated_edges_metric(adapter, base, base_cache, replacement, inside, memory_budget).double().mean())
    grouped = adapter.grouped_query_attention
    return EdgeCircuit(method=method, rule=rule, parameter=parameter,
                       edges=[[e.sender.name, receiver_name(e.receiver, grouped), e.channel] for e in inside],
                       size=len(inside), faithfulness=only / denom, completeness=1.0 - without / denom)
