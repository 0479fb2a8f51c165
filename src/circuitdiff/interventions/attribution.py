"""Attribution patching: every component's effect estimated from one forward and one backward.

effect_c[i] ~= sum over positions and features of  dLD_i/da_c * (R_c[i] - a_c[i]),
the first-order Taylor estimate of replacing a_c by R_c (Nanda 2023; Syed et al. 2023).
It is only a linear estimate: circuitdiff reports its rank correlation with exact ablation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitdiff.interventions.ablation import Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import hooked, last_mlp_at
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.exact import rows_per_forward
from circuitdiff.interventions.readout import metric, read_positions
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component


def attribution_micro_batch(adapter: Adapter, seq: int, memory_budget: int) -> int:
    """Prompts per forward+backward: the graph keeps about one no-grad pass's peak per layer."""
    return max(1, rows_per_forward(adapter, seq, memory_budget) // max(1, adapter.n_layers))


def attribution_effects(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    micro_batch: int | None = 64,
    *,
    memory_budget: int | None = None,
) -> torch.Tensor:
    """Estimated per-prompt change of the metric, (len(components), n_prompts)."""
    return attribute(adapter, base, replacement, components, micro_batch, memory_budget=memory_budget)[0]


def attribute(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    components: Sequence[Component],
    micro_batch: int | None = 64,
    *,
    memory_budget: int | None = None,
    reads: dict[str, list[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(estimated effects (len(components), n_prompts), unablated metric (n_prompts,)).

    ``reads``, when given, collects each component's activation at the read position
    (float64, CPU, one tensor per micro-batch): the forward pass has them anyway.

    The metric comes from the same forward pass, so no extra pass is needed for the baseline.
    ``micro_batch`` prompts go through each forward+backward; with ``memory_budget`` (bytes)
    it is capped so that the autograd graph fits.
    """
    if memory_budget is not None:
        cap = max(1, attribution_micro_batch(adapter, base.input_ids.shape[1], memory_budget) // base.branches)
        micro_batch = cap if micro_batch is None else min(micro_batch, cap)
    step = max(1, micro_batch or len(base))
    out = torch.empty(len(components), len(base))
    metric = torch.empty(len(base))
    embed = adapter.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _a, output: output.requires_grad_(True))
    try:
        with fast_kernels(adapter):
            for start in range(0, len(base), step):
                prompts = torch.arange(start, min(start + step, len(base)))
                part = base.select(prompts.to(base.input_ids.device))
                metric[prompts] = _attribute(adapter, part, prompts, base.rows_of(prompts), replacement, components, out,
                                             reads)
    finally:
        handle.remove()
    return out, metric


def _attribute(
    adapter: Adapter,
    part: Batch,
    prompts: torch.Tensor,
    base_rows: torch.Tensor,
    replacement: Replacement,
    components: Sequence[Component],
    out: torch.Tensor,
    reads: dict[str, list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """One forward and one backward for ``part``; fills ``out[:, prompts]``, returns the metric.

    ``base_rows``: the replacement's rows of ``part``'s rows (both branches of a multi-token task).
    The last MLP runs at the read positions only: its gradient elsewhere is exactly zero.
    """
    with torch.enable_grad(), last_mlp_at(adapter, read_positions(part)), \
            hooked(adapter, record=True, keep_grad=True) as rec:
        diff = metric(adapter, part, adapter.final_hidden(part.input_ids, part.attention_mask))
        diff.sum().backward()  # rows are independent: each prompt gets its own gradient
    rows = torch.arange(len(part))  # the prompts' own rows (a multi-token part's answer branch)
    with torch.no_grad():
        for j, c in enumerate(components):
            act, grad = rec.get(c), rec.grad_of(c)
            target = replacement.values(c, base_rows)
            delta = -act if target is None else target.to(act) - act
            per_row = (grad * delta).flatten(1).sum(1).float()
            out[j, prompts] = per_row.view(part.branches, -1).sum(0).cpu()  # a prompt's effect: its rows' sum
            if reads is not None:
                reads.setdefault(c.name, []).append(act[rows, part.read_pos[:len(part)]].double().cpu())
    return diff.detach().cpu()
