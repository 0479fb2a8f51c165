"""Random students: the draws behind the alignment score's chance level.

Each draw is a fresh random initialisation of the student's architecture (seeded), run
on the student's own prompts with the same ablation, so its score differs from the
student's only in the weights. A draw needs the components' outputs at the read position
(for similarity) and their mean effects (for influence), nothing else: no circuits, no
residual-stream read-outs for the report.

Effects come from attribution patching (one forward and one backward for all
components), not from an exact sweep: a draw costs about five forward passes whatever the
model's size, so ten draws cost less than the student's exact sweep from GPT-2-small
shapes upward (one pass per component). A random model's components write small,
nearly independent perturbations, where the linear estimate is close; it is checked, not
assumed: on the first draw the ``n_check`` components with the largest estimates are
also ablated exactly, and the analysis recomputes that draw's score with the exact values
(``alignment.null_check``; a warning when it moves by more than 0.02).
"""

from __future__ import annotations

import numpy as np
import torch

from circuitdiff.analysis.calibration import NullDraw
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.attribution import attribute
from circuitdiff.interventions.sweep import DEFAULT_MEMORY_BUDGET, exact_sweep
from circuitdiff.models.loading import LoadedModel
from circuitdiff.pipeline import batches, clean_pass
from circuitdiff.tasks.encode import EncodedTask

N_CHECK = 4
"""Components of the first draw whose attribution estimate is confirmed by exact ablation."""


def null_seed(seed: int, draw: int) -> int:
    """Torch seed of random student ``draw`` in a run with ``seed``: distinct across draws and runs."""
    return 1_000_003 * seed + draw


def random_like(lm: LoadedModel, seed: int) -> LoadedModel:
    """A freshly initialised model of ``lm``'s architecture (same config, dtype and device), seeded."""
    torch.manual_seed(seed)
    dtype = next(lm.model.parameters()).dtype  # a bf16 run gets a bf16 baseline (and half the memory)
    model = type(lm.model)(lm.model.config).to(device=lm.device, dtype=dtype).eval()
    model.requires_grad_(False)
    return LoadedModel(f"random-init {lm.name}", model, lm.tokenizer, type(lm.adapter)(model))


@torch.no_grad()
def _reads(lm: LoadedModel, enc: EncodedTask, ablation: Ablation, seed: int,
           memory_budget: int) -> tuple[dict[str, np.ndarray], Replacement, object]:
    """Component outputs at the read position, the replacement, and the batch the ablation applies to."""
    clean_batch, corrupted_batch = batches(enc, lm.device)
    clean = clean_pass(lm, clean_batch, memory_budget)
    corrupted = clean_pass(lm, corrupted_batch, memory_budget) if corrupted_batch is not None else None
    if ablation is Ablation.DENOISING:
        reference, base_batch = clean.cache, corrupted_batch
    else:
        reference, base_batch = (corrupted.cache if corrupted is not None else clean.cache), clean_batch
    replacement = Replacement(ablation, reference, n_base=len(clean_batch), seed=seed)
    read_pos = clean_batch.read_pos.cpu()
    reads = {c.name: clean.component_at_read(c, read_pos) for c in lm.adapter.components()}
    return reads, replacement, base_batch


def null_draw(lm: LoadedModel, enc: EncodedTask, ablation: Ablation, *, seed: int, n_check: int = 0,
              memory_budget: int = DEFAULT_MEMORY_BUDGET) -> NullDraw:
    """One random student's read-position outputs and attribution effects; ``n_check`` of them also exact."""
    reads, replacement, base_batch = _reads(lm, enc, ablation, seed, memory_budget)
    components = lm.adapter.components()
    estimated, base = attribute(lm.adapter, base_batch, replacement, components, memory_budget=memory_budget)
    effects = estimated.double().mean(1).numpy()
    checked = None
    if n_check > 0:
        top = np.argsort(-np.abs(effects))[:n_check]
        chosen = [components[i] for i in top]
        with torch.no_grad():  # base: the unablated metric from the attribution's own forward pass
            ablated = exact_sweep(lm.adapter, base_batch, replacement, chosen, memory_budget=memory_budget)
        exact = (ablated.double() - base.double()[None, :]).mean(1).numpy()
        checked = {c.name: float(v) for c, v in zip(chosen, exact)}
    return NullDraw(seed=seed, read_acts=reads, effects=effects, checked=checked)


def null_draws(student: LoadedModel, enc: EncodedTask, ablation: Ablation, *, seed: int, n_null: int,
               n_check: int = N_CHECK, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> list[NullDraw]:
    """``n_null`` seeded random students of ``student``'s architecture on one task, one model in memory at a time."""
    draws = []
    for k in range(n_null):
        lm = random_like(student, null_seed(seed, k))
        draws.append(null_draw(lm, enc, ablation, seed=seed, n_check=n_check if k == 0 else 0,
                               memory_budget=memory_budget))
        del lm
    return draws
