"""Attribution patching: every component's effect estimated from one forward and one backward.

effect_c[i] ~= sum over positions and features of  dLD_i/da_c * (R_c[i] - a_c[i]),
the first-order Taylor estimate of replacing a_c by R_c (Nanda 2023; Syed et al. 2023).
It is only a linear estimate: circuitdiff reports its rank correlation with exact ablation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitdiff.interventions.ablation import Replacement
from circuitdiff.interventions.forward import Batch, read_hidden
from circuitdiff.interventions.hooks import hooked
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component


def attribution_effects(
    adapter: Adapter, base: Batch, replacement: Replacement, components: Sequence[Component], micro_batch: int = 64
) -> torch.Tensor:
    """Estimated per-prompt change of the metric, (len(components), n_prompts)."""
    out = torch.empty(len(components), len(base))
    embed = adapter.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _a, output: output.requires_grad_(True))
    try:
        for start in range(0, len(base), micro_batch):
            prompts = torch.arange(start, min(start + micro_batch, len(base)))
            part = base.select(prompts.to(base.input_ids.device))
            with torch.enable_grad(), hooked(adapter, record=True, keep_grad=True) as rec:
                diff = adapter.logit_difference(read_hidden(adapter, part), part.answer_ids, part.distractor_ids)
                diff.sum().backward()  # rows are independent: each prompt gets its own gradient
            with torch.no_grad():
                for j, c in enumerate(components):
                    act, grad = rec.get(c), rec.grad_of(c)
                    target = replacement.values(c, prompts)
                    target = torch.zeros_like(act) if target is None else target.to(act)
                    out[j, prompts] = (grad * (target - act)).flatten(1).sum(1).float().cpu()
    finally:
        handle.remove()
    return out
