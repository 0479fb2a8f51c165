"""Edge attribution from gradients: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

EAP estimates an edge's exact effect to first order:
``score(s -> r)[i] = sum over positions of  Δ_s[i] · dM_i/dx_r``, where Δ_s is the sender's
(ablated - clean) write to the residual stream and x_r the receiver's input, all from one
forward and one backward pass of the plain model in which every receiver input gets its own
gradient (``intervene(split=True)``): d M/d x_r is the gradient through that receiver alone.

EAP-IG replaces the gradient at the clean point by its average along a straight path
(integrated gradients). circuitdiff's ablations (zero, mean, resample, patching) are
defined on components, not on inputs, so the path runs in activation space: at step
α_k = (k - 1/2)/m every component's output is shifted by α_k times its (ablated - clean)
difference (Hanna et al.'s activation variant; midpoint rule). Cost: m forward and backward
passes. ``ig_steps=0`` is EAP. Where the metric is linear in the sender's write both equal
exact edge patching, and over all edges EAP-IG adds up to the metric change along the path
(both tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.edges import Edge, sender_writes
from circuitdiff.interventions.forward import Batch, read_hidden
from circuitdiff.interventions.graph import Intervention, Site, SplitInputs, check_edges_supported, intervene
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.prefix import needed_width, trim
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, rows_per_forward
from circuitdiff.models.adapters.base import Adapter

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
    senders = list(dict.fromkeys(e.sender for e in edges))
    receivers = list(dict.fromkeys(e.receiver for e in edges))
    # the autograd graph holds about one no-grad pass's peak per layer; the scores need every
    # receiver's gradient and every sender's write per prompt (float32, and a stacked copy)
    seq = base.input_ids.shape[1]
    per_prompt = (len(senders) + len(receivers)) * seq * adapter.d_model * 8
    step = max(1, min(rows_per_forward(adapter, seq, memory_budget) // adapter.n_layers, memory_budget // per_prompt))
    s_index = {c: i for i, c in enumerate(senders)}
    r_index = {r: i for i, r in enumerate(receivers)}
    pick_s = torch.tensor([s_index[e.sender] for e in edges])
    pick_r = torch.tensor([r_index[e.receiver] for e in edges])
    embed = adapter.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _a, output: output.requires_grad_(True))
    try:
        with fast_kernels(adapter):
            for start in range(0, len(base), step):
                prompts = order[start:start + step]
                width = int(widths[prompts].max())
                part = trim(base.select(prompts.to(base.input_ids.device)), width)
                grads = _mean_receiver_grads(adapter, part, base_cache, replacement, prompts, width, receivers,
                                             ig_steps)
                writes = sender_writes(adapter, base_cache, replacement, senders, prompts, width)
                with torch.no_grad():
                    # one batched matrix product per prompt, (S, seq*d) x (seq*d, R), in float32: enough
                    # for a sum of seq * d_model products of gradient estimates
                    w = torch.stack([writes[c] for c in senders], dim=1).float().flatten(2)  # (m, S, s*d)
                    g = grads.float().to(w.device).flatten(2).transpose(1, 2)  # (m, s*d, R)
                    scores = torch.bmm(w, g)  # (m, S, R)
                    out[:, prompts] = scores[:, pick_s, pick_r].T.cpu()
    finally:
        handle.remove()
    return out


def _mean_receiver_grads(adapter: Adapter, part: Batch, cache: ActivationCache, replacement: Replacement,
                         prompts: torch.Tensor, width: int, receivers: list[Site], ig_steps: int) -> torch.Tensor:
    """d(sum of metric)/d(receiver input), averaged over the IG steps: (m, R, s, d_model)."""
    alphas = [0.0] if ig_steps <= 0 else [(k + 0.5) / ig_steps for k in range(ig_steps)]
    shifts = _output_shifts(adapter, cache, replacement, prompts, width) if ig_steps > 0 else {}
    total: torch.Tensor | None = None
    rows = torch.arange(len(part), device=part.input_ids.device)
    for alpha in alphas:
        ivs = [Intervention(site, rows, lambda x, d=d, a=alpha: x + a * d.to(x)) for site, d in shifts.items()]
        with torch.enable_grad(), intervene(adapter, ivs, split=True) as split:
            h = read_hidden(adapter, part)
            adapter.logit_difference(h, part.answer_ids, part.distractor_ids).sum().backward()
        for i, grad in enumerate(_receiver_grads(split, receivers)):
            if total is None:
                total = torch.zeros(grad.shape[0], len(receivers), *grad.shape[1:], dtype=grad.dtype, device=grad.device)
            total[:, i] += grad.detach()
    assert total is not None
    return total / len(alphas)


def _receiver_grads(split: SplitInputs, receivers: list[Site]) -> list[torch.Tensor]:
    qkv: dict[tuple[int, str], torch.Tensor] = {}
    out = []
    for site in receivers:
        if site.kind == "resid_final":
            grad = split.final.grad if split.final is not None else None
        elif site.kind == "mlp_input":
            grad = split.mlp[site.layer].grad
        else:
            key = (site.layer, site.channel or "")
            if key not in qkv:
                qkv[key] = split.qkv_grad(*key)
            grad = qkv[key][:, :, site.index]
        if grad is None:
            raise RuntimeError(f"no gradient reached {site.name}")
        out.append(grad)
    return out


def _output_shifts(adapter: Adapter, cache: ActivationCache, replacement: Replacement, prompts: torch.Tensor,
                   width: int) -> dict[Site, torch.Tensor]:
    """(ablated - clean) output of every component at its own output site."""
    shifts: dict[Site, torch.Tensor] = {}
    for c in adapter.components():
        clean = cache.of(c)[prompts][:, :width]
        target = replacement.values(c, prompts)
        shifts[Site.output_of(c)] = -clean if target is None else target[:, :width].to(clean) - clean
    return shifts

