"""How a sweep's effects are obtained: exact ablation, attribution patching, or both.

``hybrid`` ranks every component by attribution and ablates the top K exactly, so a
large model gets exact numbers where they matter and linear estimates elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from circuitdiff.interventions.ablation import Replacement
from circuitdiff.interventions.attribution import attribute
from circuitdiff.interventions.choices import Method
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, exact_sweep
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component


def ablated_metrics(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    method: Method = Method.EXACT,
    *,
    exact_top: int = 20,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Metric per prompt with each component replaced, (len(components), n_prompts)."""
    method = Method(method)
    if method is Method.EXACT:
        return exact_sweep(adapter, base, replacement, components, memory_budget=memory_budget, progress=progress)
    effects, baseline = attribute(adapter, base, replacement, components, memory_budget=memory_budget)
    estimated = effects + baseline[None, :]
    if method is Method.ATTRIBUTION:
        if progress is not None:
            progress(len(components))
        return estimated
    top = torch.argsort((estimated - baseline).mean(1).abs(), descending=True)[:exact_top]
    if progress is not None:
        progress(len(components) - len(top))
    chosen = [components[i] for i in top.tolist()]
    estimated[top] = exact_sweep(adapter, base, replacement, chosen, memory_budget=memory_budget, progress=progress)
    return estimated
