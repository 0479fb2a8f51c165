"""Edge attribution from gradients: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

EAP estimates an edge's exact effect to first order:
``score(s -> r)[i] = sum over positions of  Δ_s[i] · dM_i/dx_r``, where Δ_s is the sender's
(ablated - clean) write to the residual stream and x_r the receiver's input, all from one
forward and one backward pass of the plain model in which every receiver input gets its own
gradient (``intervene(split=True)``): d M/d x_r is the gradient through that receiver alone.

EAP-IG replaces the gradient at the clean point by its average along a path (integrated
gradients). circuitdiff's ablations (zero, mean, resample, patching) are defined on
components, so the path runs in activation space and moves every component at once: at
step α_k = (k - 1/2)/m (midpoint rule, k = 1..m) one run of the model adds α_k times
(ablated - clean) to every live component's output, the differences taken from the base
run's cache (``_output_shifts``). Every edge's patch grows together along this one
straight path. It is not Hanna et al.'s activation variant, which interpolates one node's
activation at a time, and at α = 1 it is not the fully ablated model: a component whose
inputs have already moved adds its full difference to a live output that is no longer the
clean one. As m grows, an edge's score tends to Δ_s · ∫₀¹ dM/dx_r(α) dα along this path
(the midpoint rule's error falls as 1/m²), and the scores over all edges add up to
M(α = 1) - M(clean), the metric change along the path, not the effect of ablating
everything. Cost: m forward and backward passes, each followed by one batched VJP per
layer through the attention norm alone (all heads' q/k/v cotangents at once,
``SplitInputs.qkv_grads``), then one matrix product per receiver group for the scores.
``ig_steps=0`` is EAP. Where the metric is linear in the sender's write both equal exact
edge patching, and over all edges EAP-IG adds up to the metric change along the path
(both tested).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.edges import Edge, sender_writes
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.graph import (HeadWeights, Intervention, Site, SplitInputs, check_edges_supported,
                                             intervene)
from circuitdiff.interventions.hooks import Recording, hooked
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.norm_vjp import HeadFactors
from circuitdiff.interventions.prefix import needed_width, trim
from circuitdiff.interventions.readout import metric
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, rows_per_forward
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

DEFAULT_IG_STEPS = 5


def eap_scores(
    adapter: Adapter,
    base: Batch,
    base_cache: ActivationCache,
    replacement: Replacement,
    edges: Sequence[Edge],
    *,
    ig_steps: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor:
    """Estimated change of the metric per edge and prompt, (len(edges), n_prompts).

    ``ig_steps`` 0 is EAP (gradient at the clean run); m > 0 is EAP-IG with m steps.
    """
    check_edges_supported(adapter)
    out = torch.empty(len(edges), len(base))
    if not edges:
        return out
    widths = needed_width(adapter, base).cpu()
    order = torch.argsort(widths, stable=True)
    senders = sorted({e.sender for e in edges}, key=_forward_order)
    groups = _ReceiverGroups([e.receiver for e in edges])
    upstream = groups.upstream_senders([_forward_order(c) for c in senders])
    # the autograd graph holds about one no-grad pass's peak per layer; the scores need every
    # receiver's gradient and every sender's write per prompt (float32, and a copy)
    seq, b = base.input_ids.shape[1], base.branches  # b rows per prompt
    per_prompt = b * (len(senders) + groups.n_rows(adapter)) * seq * adapter.d_model * 8
    step = max(1, min(rows_per_forward(adapter, seq, memory_budget) // (b * adapter.n_layers),
                      memory_budget // per_prompt))
    s_index = {c: i for i, c in enumerate(senders)}
    pick_s = torch.tensor([s_index[e.sender] for e in edges])
    column = groups.columns(adapter)
    pick_r = torch.tensor([column[e.receiver] for e in edges])
    embed = adapter.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _a, output: output.requires_grad_(True))
    reuse = HeadWeights()
    try:
        with fast_kernels(adapter):
            for start in range(0, len(base), step):
                prompts = order[start:start + step]
                width = int(widths[prompts].max())
                part = trim(base.select(prompts.to(base.input_ids.device)), width)
                rows = base.rows_of(prompts)  # the cache's and the replacement's rows: every branch
                if adapter.write_is_linear or ig_steps <= 0:
                    grads = _summed_receiver_grads(adapter, part, base_cache, replacement, rows, width, groups,
                                                   ig_steps, reuse)
                    writes = sender_writes(adapter, base_cache, replacement, senders, rows, width)
                    scores = _scores(writes, senders, grads, upstream) / max(1, ig_steps)  # (rows, S, columns)
                else:
                    scores = _stepwise_scores(adapter, part, base_cache, replacement, rows, width, groups, ig_steps,
                                              reuse, senders, upstream)
                if b > 1:  # a prompt's metric is the sum of its branches' signed read-outs: so is its score
                    scores = scores.view(b, len(prompts), *scores.shape[1:]).sum(0)
                out[:, prompts] = scores[:, pick_s, pick_r].T.cpu()
    finally:
        handle.remove()
    return out


def _forward_order(c: Component) -> tuple[int, int]:
    """Heads of a layer, then its MLP, layer by layer: the order in which writes enter the stream."""
    return (c.layer, c.head if c.head is not None else 1 << 30)


class _ReceiverGroups:
    """Receivers grouped as their gradients come out: per layer all q/k/v heads at once, then MLP inputs + logits.

    Gradients stay in these groups from the backward pass to the scores (no per-receiver copy);
    ``columns`` gives each site its column in the score matrix, the groups' rows laid end to end.
    """

    def __init__(self, receivers: Sequence[Site]) -> None:
        sites = list(dict.fromkeys(receivers))
        self.qkv_layers = sorted({s.layer for s in sites if s.channel is not None})
        self.io_layers = sorted({s.layer for s in sites if s.kind == "mlp_input"})
        self.final = any(s.kind == "resid_final" for s in sites)
        self.sites = sites

    def n_rows(self, adapter: Adapter) -> int:
        return len(self.qkv_layers) * (adapter.n_heads + 2 * adapter.n_kv_heads) + len(self.io_layers) + 1

    def columns(self, adapter: Adapter) -> dict[Site, int]:
        n_q, n_kv = adapter.n_heads, adapter.n_kv_heads
        offsets = {"q_input": 0, "k_input": n_q, "v_input": n_q + n_kv}
        col: dict[Site, int] = {}
        for s in self.sites:
            if s.channel is not None:
                col[s] = self.qkv_layers.index(s.layer) * (n_q + 2 * n_kv) + offsets[s.kind] + s.index
        base = len(self.qkv_layers) * (n_q + 2 * n_kv)
        for s in self.sites:
            if s.kind == "mlp_input":
                col[s] = base + self.io_layers.index(s.layer)
            elif s.kind == "resid_final":
                col[s] = base + len(self.io_layers)
        return col

    def upstream_senders(self, sender_order: list[tuple[int, int]]) -> list[int]:
        """Per group, how many of the senders (sorted in forward order) its receivers can read."""
        n_before = [bisect.bisect_left(sender_order, (layer, -1)) for layer in self.qkv_layers]
        return n_before + ([len(sender_order)] if self.io_layers or self.final else [])

    def grads(self, split: SplitInputs, reuse: HeadWeights) -> list[torch.Tensor | HeadFactors]:
        """Each group's gradients after ``backward``, (rows, b, s, d_model), in column order; for a
        LayerNorm/RMSNorm layer's heads their factors (they add up over IG steps, then materialise)."""
        out: list[torch.Tensor | HeadFactors] = []
        for layer in self.qkv_layers:
            factors = split.qkv_factors(layer, reuse)
            out.append(factors if factors is not None else split.qkv_grads(layer, reuse).detach())
        io = [split.mlp[layer].grad for layer in self.io_layers]
        if self.final:
            io.append(split.final.grad if split.final is not None else None)
        if any(g is None for g in io):
            raise RuntimeError("no gradient reached an MLP input or the final residual stream")
        if io:
            out.append(torch.stack(io))  # type: ignore[arg-type]
        return out


def _summed_receiver_grads(adapter: Adapter, part: Batch, cache: ActivationCache, replacement: Replacement,
                           rows: torch.Tensor, width: int, groups: _ReceiverGroups,
                           ig_steps: int, reuse: HeadWeights) -> list[torch.Tensor]:
    """d(sum of metric)/d(receiver input), summed over the IG steps: one tensor per group, (receivers, batch rows,
    s, d_model). ``rows``: the batch rows of ``part`` in the cache and the replacement (``Batch.rows_of``).

    One forward and one backward pass per step; the per-head q/k/v gradients are kept as
    factors that add up over the steps and are multiplied out once at the end
    (``SplitInputs.qkv_factors``), or for other norms come from one batched VJP per step.
    """
    total: list[torch.Tensor] = []
    for grads, _ in _step_grads(adapter, part, cache, replacement, rows, width, groups, ig_steps, reuse):
        total = grads if not total else [t.add_(g) for t, g in zip(total, grads)]  # type: ignore[arg-type]
    return _materialized(total, (len(rows), width, adapter.d_model))


def _materialized(grads: list, shape: tuple[int, int, int]) -> list[torch.Tensor]:
    return [t.materialize().view(-1, *shape) if isinstance(t, HeadFactors) else t for t in grads]


def _step_grads(adapter: Adapter, part: Batch, cache: ActivationCache, replacement: Replacement, rows: torch.Tensor,
                width: int, groups: _ReceiverGroups, ig_steps: int, reuse: HeadWeights,
                record: bool = False) -> Iterator[tuple[list, Recording | None]]:
    """Per IG step: the receiver gradients (``_ReceiverGroups.grads``), and with ``record`` every
    component's output in that step's run (what a non-linear write is taken at)."""
    alphas = [0.0] if ig_steps <= 0 else [(k + 0.5) / ig_steps for k in range(ig_steps)]
    shifts = _output_shifts(adapter, cache, replacement, rows, width) if ig_steps > 0 else {}
    every = torch.arange(len(rows), device=part.input_ids.device)
    for alpha in alphas:
        ivs = [Intervention(site, every, lambda x, d=d, a=alpha: x + a * d.to(x)) for site, d in shifts.items()]
        with torch.enable_grad(), intervene(adapter, ivs, split=True) as split, \
                hooked(adapter, record=record) as rec:
            metric(adapter, part, adapter.final_hidden(part.input_ids, part.attention_mask)).sum().backward()
        yield groups.grads(split, reuse), rec if record else None


def _stepwise_scores(adapter: Adapter, part: Batch, cache: ActivationCache, replacement: Replacement,
                     rows: torch.Tensor, width: int, groups: _ReceiverGroups, ig_steps: int, reuse: HeadWeights,
                     senders: list[Component], upstream: list[int]) -> torch.Tensor:
    """EAP-IG where a write is not linear in the sender's output (sandwich norms): at each step the
    sender's write is the derivative of its sublayer's write at that step's own outputs along the
    sender's (ablated - clean) difference (``residual_write`` through ``torch.func.jvp``), so that
    over all edges the scores add up to the metric change along the path, as for linear writes."""
    shifts = _output_shifts(adapter, cache, replacement, rows, width)
    shape = (len(rows), width, adapter.d_model)
    total = None
    for grads, rec in _step_grads(adapter, part, cache, replacement, rows, width, groups, ig_steps, reuse, True):
        assert rec is not None
        writes = {}
        for c in senders:
            live = rec.mlps[c.layer] if c.head is None else rec.heads_flat[c.layer]
            delta = shifts[Site.output_of(c)].to(live)
            _, writes[c] = torch.func.jvp(lambda t, c=c, live=live, delta=delta:
                                          adapter.residual_write(c, t * delta, live.detach()),
                                          (torch.zeros((), dtype=live.dtype),), (torch.ones((), dtype=live.dtype),))
        step = _scores(writes, senders, _materialized(grads, shape), upstream)
        total = step if total is None else total + step
    assert total is not None
    return total / ig_steps


@torch.no_grad()
def _scores(writes: dict[Component, torch.Tensor], senders: list[Component], grads: list[torch.Tensor],
            upstream: list[int]) -> torch.Tensor:
    """Σ over positions of write · gradient for every (sender, receiver row): (m, S, rows of all groups).

    ``senders`` are in forward order and group j's receivers read only its first ``upstream[j]``
    senders (a q/k/v input at layer l reads layers < l), so each group multiplies only those:
    about half the products. One batched matrix product per group, (S_j, s*d) x (s*d, rows),
    in float32: enough for a sum of seq * d_model products of gradient estimates.
    """
    w = torch.stack([writes[c] for c in senders], dim=1).float().flatten(2)  # (m, S, s*d)
    out = torch.zeros(w.shape[0], w.shape[1], sum(len(g) for g in grads), device=w.device)
    col = 0
    for g, k in zip(grads, upstream):
        rows = g.to(w.device).float().flatten(2).transpose(0, 1).contiguous()  # (m, rows, s*d)
        out[:, :k, col:col + len(g)] = torch.bmm(w[:, :k], rows.transpose(1, 2))
        col += len(g)
    return out


def _output_shifts(adapter: Adapter, cache: ActivationCache, replacement: Replacement, rows: torch.Tensor,
                   width: int) -> dict[Site, torch.Tensor]:
    """(ablated - clean) output of every component at its own output site, on the cache's ``rows``."""
    shifts: dict[Site, torch.Tensor] = {}
    for c in adapter.components():
        clean = cache.of(c)[rows][:, :width]
        target = replacement.values(c, rows)
        shifts[Site.output_of(c)] = -clean if target is None else target[:, :width].to(clean) - clean
    return shifts

