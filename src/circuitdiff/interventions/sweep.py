"""Exact single-component ablation sweeps, many variants per forward pass.

Each forward pass stacks k ablation variants of the same m prompts along the batch
dimension (variant j owns rows j*m .. (j+1)*m - 1), so per-call overhead and weight
reads are shared. k and m come from a memory budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.forward import Batch, logit_difference, read_hidden
from circuitdiff.interventions.hooks import Patch, hooked
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass


def bytes_per_row(adapter: Adapter, seq: int, element_size: int = 4) -> int:
    """Rough peak activation memory of one batch row in a no-grad forward pass."""
    d_mlp = 4 * adapter.d_model
    per_token = 6 * adapter.d_model + 2 * d_mlp + 2 * adapter.n_heads * seq
    return seq * per_token * element_size


def rows_per_forward(adapter: Adapter, seq: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    return max(1, memory_budget // bytes_per_row(adapter, seq, _element_size(adapter)))


def _element_size(adapter: Adapter) -> int:
    return next(adapter.model.parameters()).element_size()


@torch.no_grad()
def record_activations(adapter: Adapter, batch: Batch, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> ActivationCache:
    """Every component's activation on every prompt of ``batch``, in micro-batches."""
    step = rows_per_forward(adapter, batch.input_ids.shape[1], memory_budget)
    recordings = []
    for start in range(0, len(batch), step):
        part = batch.select(torch.arange(start, min(start + step, len(batch))))
        with hooked(adapter, record=True) as rec:
            read_hidden(adapter, part)
        recordings.append(rec)
    return ActivationCache.from_recordings(recordings, batch.attention_mask)


@torch.no_grad()
def exact_sweep(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Metric per prompt with each component replaced alone: (len(components), n_prompts).

    ``progress`` is called after each pass with the number of components it finished
    (fractional when the prompts are split over several passes).
    """
    n = len(base)
    device = base.input_ids.device
    budget_rows = rows_per_forward(adapter, base.input_ids.shape[1], memory_budget)
    m = min(n, budget_rows)  # prompts per pass
    k = max(1, budget_rows // m)  # variants per pass
    out = torch.empty(len(components), n)
    for start in range(0, n, m):
        prompts = torch.arange(start, min(start + m, n))
        part = base.select(prompts.to(device))
        width = len(prompts)
        for c0 in range(0, len(components), k):
            group = components[c0 : c0 + k]
            patches = [
                Patch(c, torch.arange(j * width, (j + 1) * width, device=device), replacement.values(c, prompts))
                for j, c in enumerate(group)
            ]
            diff = logit_difference(adapter, part.repeat(len(group)), patches)
            out[c0 : c0 + len(group), prompts] = diff.view(len(group), width).cpu()
            if progress is not None:
                progress(len(group) * width / n)
    return out


def base_metric(adapter: Adapter, base: Batch, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Unablated metric per prompt, in micro-batches."""
    step = rows_per_forward(adapter, base.input_ids.shape[1], memory_budget)
    parts = [
        logit_difference(adapter, base.select(torch.arange(s, min(s + step, len(base)), device=base.input_ids.device)))
        for s in range(0, len(base), step)
    ]
    return torch.cat(parts).cpu()
