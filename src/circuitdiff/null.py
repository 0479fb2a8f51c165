"""Random students: the draws behind the alignment score's chance level.

Each draw is a fresh random initialisation of the student's architecture (seeded), run
on the student's own prompts with the same ablation, so its score differs from the
student's only in the weights. A draw needs the components' outputs at the read position
(for similarity) and their mean effects (for influence), nothing else: no circuits, no
residual-stream read-outs for the report.

Effects come from attribution patching (one forward and one backward for all
components, which also records the read-position outputs), not from an exact sweep: a
draw costs a seeded initialisation, the reference run and about three forward passes
whatever the number of components, while a sweep grows with it. Ten draws cost 1.3
student sweeps for a 6-layer GPT-2-small-shaped student on one task (the models are
built once for all tasks, so more tasks lower that), and less for deeper students
(``benchmarks/null_and_intervals.py``). A random model's components write small,
nearly independent perturbations, where the linear estimate is close; it is checked, not
assumed: on the first draw the ``n_check`` components with the largest estimates are
also ablated exactly, and the analysis recomputes that draw's score with the exact values
(``alignment.null_check``; a warning when it moves by more than 0.02).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch

from circuitdiff.analysis.calibration import NullDraw
from circuitdiff.errors import TaskEncodingError
from circuitdiff.interventions.ablation import Ablation, ActivationCache
from circuitdiff.interventions.attribution import attribute
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, exact_sweep, record_activations
from circuitdiff.models.loading import LoadedModel
from circuitdiff.pipeline import batches, task_replacement
from circuitdiff.tasks.encode import EncodedTask

N_CHECK = 4
"""Components of the first draw whose attribution estimate is confirmed by exact ablation."""

DRAWS_VERSION = 2
"""Bumped whenever a seed's random students change, so that a ``--null-cache`` written before is not read
(2: only the embedding rows the prompts read are drawn, each under its own seed)."""


def null_seed(seed: int, draw: int) -> int:
    """Torch seed of random student ``draw`` in a run with ``seed``: distinct across draws and runs."""
    return 1_000_003 * seed + draw


def task_tokens(tasks: Sequence[EncodedTask]) -> list[int]:
    """Every token id the tasks' passes read from the input embedding or, tied, from the LM head."""
    ids = [t for enc in tasks for t in (enc.input_ids, enc.corrupted_input_ids, enc.answer_ids, enc.distractor_ids,
                                         enc.distractor_input_ids, enc.corrupted_distractor_input_ids,
                                         enc.answer_tokens, enc.distractor_tokens)
           if t is not None]
    flat = torch.cat([t.flatten() for t in ids]) if ids else torch.empty(0, dtype=torch.long)
    return flat[flat >= 0].unique().tolist()  # continuation tables are -1 padded


def row_seed(seed: int, token: int) -> int:
    """Torch seed of token ``token``'s embedding row in the random model with ``seed``: hashed, so no row
    stream is another model's or another row's."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{token}".encode(), digest_size=8).digest(), "little")


def random_like(lm: LoadedModel, seed: int, tokens: Iterable[int]) -> LoadedModel:
    """A freshly initialised model of ``lm``'s architecture (same config, dtype and device), seeded.

    Built on the meta device and initialised once by the model class's own ``init_weights``
    (a plain construction initialises every weight twice: PyTorch's default, then Hugging
    Face's): a third less time, same distributions. Nothing is drawn that nothing reads:
    a weight that tying replaces (GPT-2's LM head) is skipped, as ``from_pretrained`` skips
    it, and of the input embedding (39% of a GPT-2-small-shaped student's draws) only the
    rows of ``tokens`` are drawn, each by the class's own init under its own seed
    (``row_seed``), so a row does not depend on which other rows are drawn: a task's random
    students are the same whichever tasks share the run. The other rows are zero. Buffers
    (rotary frequencies, position ids) are not weights; they are copied from ``lm``.
    """
    dtype = next(lm.model.parameters()).dtype  # a bf16 run gets a bf16 baseline (and half the memory)
    with torch.device("meta"):
        model = type(lm.model)(lm.model.config)
    model = model.to_empty(device=lm.device)
    embedding = model.get_input_embeddings()
    skipped = [model.get_parameter(name) for name in getattr(model, "all_tied_weights_keys", {})]  # empty unless tied
    for weight in [*skipped, embedding.weight]:
        setattr(weight, "_is_hf_initialized", True)  # transformers' own "skip this init" mark
    torch.manual_seed(seed)
    with torch.no_grad():
        model.init_weights()
        _draw_rows(model, embedding, seed, tokens)
        source = dict(lm.model.named_buffers())
        for name, buffer in model.named_buffers():
            buffer.copy_(source[name])
    model = model.to(dtype=dtype).eval()
    model.requires_grad_(False)
    return LoadedModel(f"random-init {lm.name}", model, lm.tokenizer, type(lm.adapter)(model))


def _draw_rows(model: torch.nn.Module, embedding: torch.nn.Embedding, seed: int, tokens: Iterable[int]) -> None:
    """Rows ``tokens`` of ``embedding`` drawn one by one by the model class's init of a one-row embedding
    (a padding row stays zero, as the class makes it); every other row zero."""
    weight = embedding.weight
    weight.zero_()
    probe = torch.nn.Embedding(1, weight.shape[1])
    with torch.random.fork_rng(devices=[]):
        for token in sorted(set(tokens)):
            probe.padding_idx = 0 if token == getattr(embedding, "padding_idx", None) else None
            torch.manual_seed(row_seed(seed, token))
            model._init_weights(probe)
            weight[token] = probe.weight[0].to(weight)


@torch.no_grad()
def _cache(lm: LoadedModel, batch: Batch, memory_budget: int) -> ActivationCache:
    """Every component's activations on ``batch``: the reference that mean/resample/patching replace with."""
    cache = record_activations(lm.adapter, batch, memory_budget)
    return ActivationCache(cache.heads.cpu(), cache.mlps.cpu(), cache.mask.cpu())


def null_draw(lm: LoadedModel, enc: EncodedTask, ablation: Ablation, *, seed: int, n_check: int = 0,
              memory_budget: int = DEFAULT_MEMORY_BUDGET) -> NullDraw:
    """One random student's read-position outputs and attribution effects; ``n_check`` of them also exact.

    ``seed`` is the run's (resample ablation draws its sources from it, as for the student).

    Passes: the reference run (none for zero ablation) and one forward + backward, which
    also records the read-position outputs; denoising patches the corrupted run, so its
    clean outputs need one more forward.
    """
    clean_batch, corrupted_batch = batches(enc, lm.device)
    if ablation.needs_corrupted and corrupted_batch is None:
        raise TaskEncodingError(f"{ablation.value} patching needs corrupted prompts")
    denoising = ablation is Ablation.DENOISING
    reference_batch = clean_batch if denoising or corrupted_batch is None else corrupted_batch
    reference = None if ablation is Ablation.ZERO else _cache(lm, reference_batch, memory_budget)
    base_batch = corrupted_batch if denoising else clean_batch
    replacement = task_replacement(ablation, reference, enc, int(clean_batch.input_ids.shape[0]), seed,
                                   corrupted_batch is not None)
    components = lm.adapter.components()
    collected: dict[str, list[torch.Tensor]] = {}
    estimated, base = attribute(lm.adapter, base_batch, replacement, components, memory_budget=memory_budget,
                                reads=None if denoising else collected)
    if denoising:  # the reference run was the clean one: read its outputs from the cache
        rows, pos = torch.arange(len(clean_batch)), clean_batch.read_pos[:len(clean_batch)].cpu()
        reads = {c.name: reference.of(c)[rows, pos].double().numpy() for c in components}  # type: ignore[union-attr]
    else:
        reads = {name: torch.cat(parts).numpy() for name, parts in collected.items()}
    effects = estimated.double().mean(1).numpy()
    checked = None
    if n_check > 0:
        chosen = [components[i] for i in np.argsort(-np.abs(effects))[:n_check]]
        with torch.no_grad():  # base: the unablated metric from the attribution's own forward pass
            ablated = exact_sweep(lm.adapter, base_batch, replacement, chosen, memory_budget=memory_budget)
        exact = (ablated.double() - base.double()[None, :]).mean(1).numpy()
        checked = {c.name: float(v) for c, v in zip(chosen, exact)}
    return NullDraw(seed=seed, read_acts=reads, effects=effects, checked=checked)


def null_draws(student: LoadedModel, tasks: Sequence[EncodedTask], ablation: Ablation, *, seed: int, n_null: int,
               n_check: int = N_CHECK, memory_budget: int = DEFAULT_MEMORY_BUDGET,
               progress: Callable[[float], None] | None = None) -> list[list[NullDraw]]:
    """``n_null`` seeded random students of ``student``'s architecture on each task: result[task][draw].

    Each random model is built once for all tasks, and only one is in memory at a time.
    """
    draws: list[list[NullDraw]] = [[] for _ in tasks]
    tokens = task_tokens(tasks)
    for k in range(n_null):
        lm = random_like(student, null_seed(seed, k), tokens)
        for per_task, enc in zip(draws, tasks):
            draw = null_draw(lm, enc, ablation, seed=seed, n_check=n_check if k == 0 else 0,
                             memory_budget=memory_budget)
            per_task.append(replace(draw, seed=null_seed(seed, k)))
        del lm
        if progress is not None:
            progress(1)
    return draws
