"""Exact single-component ablation sweeps: prefix reuse, stacked variants, trimmed positions.

Components are grouped by layer. For each chunk of prompts one clean pass records every
block's output; each ablated pass then starts at the ablated layer L (blocks 0..L-1 return
the cached clean output, see ``prefix.py``) and stacks k variants of the chunk's m prompts
along the batch dimension (variant j owns rows j*m .. (j+1)*m - 1), so per-call overhead and
weight reads are shared. Prompts are bucketed by how many positions the metric depends on
(their width), so padding after the read position is not computed. The LM head is read only
at the read position and only through the answer and distractor rows. Chunk sizes come from a memory
budget. The result equals one full forward pass per component up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.choices import DEFAULT_MEMORY_BUDGET
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.prefix import block_outputs, needed_width, repeat_rows, start_at, trim
from circuitdiff.interventions.readout import read_metric
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

MIN_PASS_TOKENS = 512
"""Rows (variants x prompts x positions) a pass needs to keep a CPU matrix multiply busy: a float32 multiply
of GPT-2's MLP shapes runs as fast at 256-624 rows as at 3-6k (61-68 GFLOP/s on one core of the CI
machine; 48 at 128 rows). The sweep buckets prompts by width while each pass keeps this many rows (padding
to the widest prompt cost 14% of the FLOPs on 24 IOI prompts); the circuit search stacks speculative
candidates only to reach it (each one stacked runs from the earliest layer in its pass)."""


def _d_mlp(adapter: Adapter) -> int:
    cfg = adapter.model.config
    for name in ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4 * adapter.d_model


def bytes_per_row(adapter: Adapter, seq: int, element_size: int = 4) -> int:
    """Rough peak activation memory of one batch row in a no-grad forward pass."""
    per_token = 6 * adapter.d_model + 3 * _d_mlp(adapter) + 3 * adapter.n_heads * seq
    return seq * per_token * element_size


def rows_per_forward(adapter: Adapter, seq: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    return max(1, memory_budget // bytes_per_row(adapter, seq, _element_size(adapter)))


def _element_size(adapter: Adapter) -> int:
    return next(adapter.model.parameters()).element_size()


@torch.no_grad()
def record_activations(adapter: Adapter, batch: Batch, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> ActivationCache:
    """Every component's activation on every prompt of ``batch``, in micro-batches.

    Under the kernels of the passes that patch them in (``fast_kernels``): a prompt patched with
    its own recorded activation then reads exactly its unpatched metric.
    """
    step = max(1, rows_per_forward(adapter, batch.input_ids.shape[1], memory_budget) // batch.branches)
    recordings, rows = [], []
    with fast_kernels(adapter):
        for start in range(0, len(batch), step):
            prompts = torch.arange(start, min(start + step, len(batch)), device=batch.input_ids.device)
            part = batch.select(prompts)
            with hooked(adapter, record=True) as rec:
                adapter.base_forward(part.input_ids, part.attention_mask)
            recordings.append(rec)
            rows.append(batch.rows_of(prompts))
    return ActivationCache.from_recordings(recordings, batch.attention_mask,
                                           torch.cat(rows) if batch.branches > 1 else None)


@dataclass(frozen=True)
class Chunk:
    """Prompts run together, trimmed to ``width`` positions; ``groups`` are (layer, component indices) passes."""

    prompts: torch.Tensor
    width: int
    groups: tuple[tuple[int, tuple[int, ...]], ...]


def plan_sweep(
    adapter: Adapter, base: Batch, components: Sequence[Component], memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> list[Chunk]:
    """The passes ``exact_sweep`` runs: prompt chunks by needed width, then variant groups by layer."""
    widths = needed_width(adapter, base).cpu()
    seq = base.input_ids.shape[1]
    by_layer: dict[int, list[int]] = {}
    for i, c in enumerate(components):
        by_layer.setdefault(c.layer, []).append(i)
    # the cached prefix (one block output per layer) must fit the budget as well
    cache_row = adapter.n_layers * seq * adapter.d_model * _element_size(adapter)
    b = base.branches  # rows per prompt
    max_prompts = max(1, min(rows_per_forward(adapter, seq, memory_budget), memory_budget // cache_row) // b)
    k_typical = max((len(v) for v in by_layer.values()), default=1)
    min_prompts = -(-MIN_PASS_TOKENS // (k_typical * b * max(1, int(widths.float().mean()))))
    chunks = []
    for prompts in prompt_chunks(widths, max_prompts, min_prompts):
        width = int(widths[prompts].max())
        k_max = max(1, rows_per_forward(adapter, width, memory_budget) // (b * len(prompts)))
        groups = []
        for layer in sorted(by_layer):
            idx = by_layer[layer]
            n_pass = -(-len(idx) // k_max)
            size = -(-len(idx) // n_pass)  # even split: 13 variants at k_max 10 -> 7 + 6
            groups.extend((layer, tuple(idx[g : g + size])) for g in range(0, len(idx), size))
        chunks.append(Chunk(prompts, width, tuple(groups)))
    return chunks


def prompt_chunks(widths: torch.Tensor, max_prompts: int, min_prompts: int) -> list[torch.Tensor]:
    """Prompt indices by increasing width: at most ``max_prompts`` per chunk, closed at a width
    change once it holds ``min_prompts``; a short last chunk joins the previous one if it fits."""
    order = torch.argsort(widths, stable=True)
    chunks: list[torch.Tensor] = []
    start, n = 0, len(order)
    while start < n:
        stop = min(start + max_prompts, n)
        for j in range(start + min_prompts, stop):
            if widths[order[j]] != widths[order[j - 1]]:
                stop = j
                break
        chunks.append(order[start:stop])
        start = stop
    if len(chunks) > 1 and len(chunks[-1]) < min_prompts and len(chunks[-1]) + len(chunks[-2]) <= max_prompts:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


@torch.no_grad()
def exact_sweep(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Metric per prompt with each component replaced alone: (len(components), n_prompts).

    ``progress`` is called after each pass with the number of components it finished
    (fractional when the prompts are split over several passes).
    """
    out = torch.empty(len(components), len(base))
    if not components:
        return out
    with fast_kernels(adapter):
        for chunk in plan_sweep(adapter, base, components, memory_budget):
            _run_chunk(adapter, base, replacement, components, chunk, out, progress)
    return out


def _run_chunk(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    chunk: Chunk,
    out: torch.Tensor,
    progress: Callable[[float], None] | None,
) -> None:
    """One clean pass recording the prefix for the chunk's prompts, then one pass per variant group."""
    device = base.input_ids.device
    prompts, w = chunk.prompts, chunk.width
    m = len(prompts)
    part = trim(base.select(prompts.to(device)), w)
    prefix = block_outputs(adapter, part, [layer - 1 for layer, _ in chunk.groups if layer > 0])
    base_rows = base.rows_of(prompts)  # the replacement's rows (both branches of a multi-token task)
    for layer, idx in chunk.groups:
        k = len(idx)
        stacked = part.repeat(k)
        patches = []
        for j, i in enumerate(idx):
            values = replacement.values(components[i], base_rows)
            rows = stacked.rows_of(torch.arange(j * m, (j + 1) * m, device=device))
            patches.append(Patch(components[i], rows, None if values is None else values[:, :w]))
        with start_at(adapter, layer, repeat_rows(prefix.get(layer - 1), k, part.branches)):
            diff = read_metric(adapter, stacked, patches)
        out[torch.tensor(idx)[:, None], prompts[None, :]] = diff.view(k, m).cpu()
        if progress is not None:
            progress(k * m / len(base))
