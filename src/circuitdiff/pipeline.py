"""Run one task on one model: clean pass, reference activations, exact sweep, effects.

The output is plain arrays (``ModelTaskRun``, defined in ``analysis.runs``); everything
downstream (analysis, report) reads only these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuitdiff.analysis.agreement import TOP_K_COMPONENTS, agreement
from circuitdiff.analysis.circuits import Circuit, CircuitCurve
from circuitdiff.analysis.influence import (
    WITHHELD,
    ComponentEffect,
    clean_problem,
    component_effects,
    relative_problem,
)
from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.circuits import discover, other_ablation
from circuitdiff.errors import NumericalError, TaskEncodingError
from circuitdiff.interventions.ablation import (
    MIN_TEMPLATE_PROMPTS,
    Ablation,
    ActivationCache,
    Replacement,
    template_warnings,
)
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import hooked
from circuitdiff.interventions.kernels import fast_kernels, switches_attention
from circuitdiff.interventions.readout import metric_and_answer_probability
from circuitdiff.interventions.attribution import attribution_effects
from circuitdiff.interventions.edge_methods import EdgeMethod, base_cache_for, score_edges
from circuitdiff.interventions.methods import Method, ablated_metrics
from circuitdiff.interventions.mlp_hidden import mlp_hidden_at
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, rows_per_forward
from circuitdiff.models.components import Component
from circuitdiff.models.loading import LoadedModel
from circuitdiff.schema import Agreement, Note, metric_name
from circuitdiff.tasks.base import Task
from circuitdiff.tasks.encode import EncodedTask, encode_task
from circuitdiff.tasks.roles import role_positions
from circuitdiff.tasks.spans import token_spans


@dataclass
class CleanPass:
    """What the unablated model does on a prompt set, per prompt."""

    logit_diff: np.ndarray
    answer_prob: np.ndarray
    cache: ActivationCache
    residual_read: np.ndarray
    """(n_layers + 1, n, d_model): residual stream at the read position, embeddings first."""
    attention_read: np.ndarray | None
    """(n_layers, n, n_heads, seq): each head's attention from the read position (eager attention only)."""
    mlp_hidden_read: np.ndarray | None = None
    """(n_layers, n, d_ff): MLP hidden activations at the read position (``interventions.mlp_hidden``)."""

    def component_at_read(self, component: Component, read_pos: torch.Tensor) -> np.ndarray:
        acts = self.cache.of(component)
        return acts[torch.arange(acts.shape[0]), read_pos].double().numpy()


def batches(enc: EncodedTask, device: torch.device) -> tuple[Batch, Batch | None]:
    """The clean and corrupted batches: one row per prompt, or both branches of a multi-token task."""
    clean = _batch(enc, enc.input_ids, enc.attention_mask, enc.distractor_input_ids, enc.distractor_attention_mask,
                   enc.read_pos).to(device)
    if enc.corrupted_input_ids is None:
        return clean, None
    corrupted = _batch(enc, enc.corrupted_input_ids, enc.corrupted_attention_mask, enc.corrupted_distractor_input_ids,
                       enc.corrupted_distractor_attention_mask, enc.corrupted_read_pos).to(device)
    return clean, corrupted


def _batch(enc: EncodedTask, ids: torch.Tensor, mask: torch.Tensor, d_ids: torch.Tensor | None,
           d_mask: torch.Tensor | None, read_pos: torch.Tensor) -> Batch:
    if enc.answer_tokens is None or enc.distractor_tokens is None or d_ids is None or d_mask is None:
        return Batch(ids, mask, read_pos, enc.answer_ids, enc.distractor_ids)
    width = max(enc.answer_tokens.shape[1], enc.distractor_tokens.shape[1])
    targets = torch.full((2 * enc.n, width), -1, dtype=torch.long)
    targets[:enc.n, :enc.answer_tokens.shape[1]] = enc.answer_tokens
    targets[enc.n:, :enc.distractor_tokens.shape[1]] = enc.distractor_tokens
    two = (lambda t: torch.cat([t, t]))  # noqa: E731
    return Batch(torch.cat([ids, d_ids]), torch.cat([mask, d_mask]), two(read_pos), two(enc.answer_ids),
                 two(enc.distractor_ids), targets=targets, branches=2)


def row_groups(enc: EncodedTask) -> torch.Tensor | None:
    """Template groups of a batch's rows (``batches``): a multi-token task's distractor branch has groups
    of its own, so that a template mean at a continuation position averages one branch's tokens."""
    if enc.template_ids is None or enc.branches == 1:
        return enc.template_ids
    return torch.cat([enc.template_ids, enc.template_ids + len(enc.template_names)])


def model_context(lm: LoadedModel) -> int | None:
    """The model's context in tokens (its position table), None when the config names none (rotary only)."""
    config = lm.model.config
    value = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


@torch.no_grad()
def clean_pass(lm: LoadedModel, batch: Batch, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> CleanPass:
    """Unpatched run in micro-batches recording components, residuals and attention at the read position.

    The metric and the activations come from a pass under the kernels every sweep, circuit and
    edge pass runs (``fast_kernels``) and through the same read-out (``readout.metric``), so an
    effect is the component's and nothing else; attention weights, which only eager attention
    returns, come from an eager pass of their own where the kernels differ.
    """
    adapter = lm.adapter
    step = max(1, rows_per_forward(adapter, batch.input_ids.shape[1], memory_budget) // batch.branches)
    separate_attention = switches_attention(adapter)
    recs, diffs, probs, resid, attn, hidden, order = [], [], [], [], [], [], []
    for start in range(0, len(batch), step):
        prompts = torch.arange(start, min(start + step, len(batch)), device=batch.input_ids.device)
        part = batch.select(prompts)
        order.append(batch.rows_of(prompts))
        rows = torch.arange(len(part), device=part.input_ids.device)  # the prompts' own (answer-branch) rows
        read = part.read_pos[:len(part)]
        with fast_kernels(adapter), hooked(adapter, record=True) as rec, \
                mlp_hidden_at(adapter, read) as mlp_h:
            out = adapter.base_forward(part.input_ids, part.attention_mask, output_hidden_states=True,
                                       output_attentions=not separate_attention)
        value, prob = metric_and_answer_probability(adapter, part, out.last_hidden_state)
        diffs.append(value)
        probs.append(prob)
        resid.append(torch.stack([h[rows, read] for h in out.hidden_states]).float().cpu())
        attentions = (adapter.base_forward(part.input_ids[:len(part)], part.attention_mask[:len(part)],
                                           output_attentions=True).attentions
                      if separate_attention else out.attentions)
        if attentions:  # None when the model was not loaded with eager attention
            attn.append(torch.stack([a[rows, :, read] for a in attentions]).float().cpu())
        recs.append(rec)
        hidden.append(mlp_h)
    cache = ActivationCache.from_recordings(recs, batch.attention_mask.cpu(),
                                            torch.cat(order) if batch.branches > 1 else None)
    return CleanPass(
        logit_diff=torch.cat(diffs).cpu().double().numpy(),
        answer_prob=torch.cat(probs).cpu().double().numpy(),
        cache=_to_cpu(cache),
        residual_read=torch.cat(resid, dim=1).double().numpy(),
        attention_read=torch.cat(attn, dim=1).double().numpy() if attn else None,
        mlp_hidden_read=(torch.stack([torch.cat(per_layer) for per_layer in zip(*hidden)]).numpy()
                         if all(hidden) else None),
    )


def _to_cpu(cache: ActivationCache) -> ActivationCache:
    return ActivationCache(cache.heads.cpu(), cache.mlps.cpu(), cache.mask.cpu())


def check_finite(values: np.ndarray, what: str, model: str, task: str, components: list[Component] | None = None) -> None:
    """Stop with a clear message naming the component and task when a metric is NaN or infinite."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    where = ""
    if components is not None and values.ndim == 2:
        where = f" (component {components[int(np.argwhere(bad)[0][0])].name})"
    raise NumericalError(f"non-finite {what} for model '{model}' on task '{task}'{where}")


def run_model_on_task(
    lm: LoadedModel,
    task: Task,
    ablation: Ablation,
    *,
    seed: int = 0,
    first_token: bool = False,
    method: Method = Method.EXACT,
    exact_top: int = 20,
    circuit_thresholds: Sequence[float] = (),
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[float], None] | None = None,
    encoded: EncodedTask | None = None,
    n_boot: int = 1000,
    edges: EdgeMethod = EdgeMethod.NONE,
    edge_progress: Callable[[float], None] | None = None,
) -> ModelTaskRun:
    """Measure every component's effect on ``task`` under ``ablation``, then prune its circuits.

    ``progress`` is told of each component swept and each one decided per circuit threshold;
    ``edge_progress`` of each edge patched with ``edges`` exact (thousands of forward rows: its own bar);
    ``n_boot`` resamples of prompts give each effect its interval.
    """
    enc = encoded if encoded is not None else encode_task(task, lm.tokenizer, first_token=first_token,
                                                           max_length=model_context(lm))
    clean_batch, corrupted_batch = batches(enc, lm.device)
    if ablation.needs_corrupted and corrupted_batch is None:
        raise TaskEncodingError(f"{ablation.value} patching needs corrupted prompts; task '{task.name}' has none")
    name, adapter = lm.name, lm.adapter
    metric = metric_name(enc.branches > 1)
    clean = clean_pass(lm, clean_batch, memory_budget)
    check_finite(clean.logit_diff, f"clean {metric}", name, task.name)
    corrupted = clean_pass(lm, corrupted_batch, memory_budget) if corrupted_batch is not None else None
    base_batch, base, replacement, other = _replacements(ablation, clean, corrupted, clean_batch, corrupted_batch,
                                                         enc, seed)
    notes = _run_notes(name, task.name, ablation, enc, clean.logit_diff,
                       None if corrupted is None else corrupted.logit_diff)

    components = adapter.components()
    ablated = ablated_metrics(adapter, base_batch, replacement, components, method, exact_top=exact_top,
                              memory_budget=memory_budget, progress=progress)
    ablated_np = ablated.double().numpy()
    check_finite(ablated_np, f"ablated {metric}", name, task.name, components)
    corrupted_np = None if corrupted is None else corrupted.logit_diff
    effects = component_effects(components, ablated_np, base, clean.logit_diff, ablation=ablation.value,
                                corrupted=corrupted_np, n_boot=n_boot, seed=seed)
    attribution = _attribution_check(lm, task.name, base_batch, replacement, components, effects, notes,
                                     memory_budget) if method is Method.EXACT else None
    circuits, curve = _circuits(lm, task.name, ablation, base_batch, replacement, other, effects, clean.logit_diff,
                                base, circuit_thresholds, progress, notes, seed=seed, memory_budget=memory_budget)
    edge_scores = None
    if edges is not EdgeMethod.NONE:
        base_cache = base_cache_for(clean.cache, corrupted.cache if corrupted else None, ablation.base_is_corrupted)
        edge_scores = score_edges(adapter, base_batch, base_cache, replacement, edges, memory_budget=memory_budget,
                                  base_metric=base, circuits=clean_problem(base) is None, progress=edge_progress)
    return ModelTaskRun(
        info=lm.info, task=task.name, n_prompts=len(task), ablation=ablation.value, method=method.value,
        components=components, clean=clean.logit_diff, base=base, ablated=ablated_np, corrupted=corrupted_np,
        effects=effects, attribution_spearman=None if attribution is None else attribution.spearman, attribution_agreement=attribution,
        circuits=circuits, circuit_curve=curve, multi_token=enc.branches > 1,
        edges=edge_scores, notes=notes, **_read_outs(lm, task, enc, clean, clean_batch, components),
    )


def _read_outs(lm: LoadedModel, task: Task, enc: EncodedTask, clean: CleanPass, clean_batch: Batch,
               components: list[Component]) -> dict[str, Any]:
    """The clean run's read-outs that the representation analyses use (``ModelTaskRun`` fields of those names).

    Everything here is read off the one clean pass: no intervention is involved, so it is kept
    apart from the effects and circuits that ``run_model_on_task`` measures.
    """
    n = len(clean_batch)  # a multi-token task's read-outs are its answer-branch rows (the prompt is shared)
    own = CleanPass(clean.logit_diff, clean.answer_prob, clean.cache.prompts(n), clean.residual_read,
                    clean.attention_read, clean.mlp_hidden_read)
    return {
        "answer_prob": clean.answer_prob,
        "read_acts": {c.name: own.component_at_read(c, clean_batch.read_pos[:n].cpu()) for c in components},
        "residual_read": clean.residual_read,
        "attention_read": clean.attention_read,
        "seq_len": int(clean_batch.input_ids.shape[1]),
        "roles": role_positions(task, enc, lm.tokenizer),
        "template_ids": None if enc.template_ids is None else enc.template_ids.cpu().numpy(),
        "template_names": enc.template_names,
        "mlp_outputs": own.cache.mlps.float().numpy(),
        "token_mask": own.cache.mask.numpy(),
        "mlp_hidden_read": clean.mlp_hidden_read,
        "token_spans": token_spans(task, enc, lm.tokenizer),
    }


def _replacements(
    ablation: Ablation, clean: CleanPass, corrupted: CleanPass | None, clean_batch: Batch,
    corrupted_batch: Batch | None, enc: EncodedTask, seed: int,
) -> tuple[Batch, np.ndarray, Replacement, Callable[[], Replacement | None]]:
    """The base run (batch and metric), the replacement for ``ablation``, and a maker of the replacement for
    its cross-check ablation (built only if circuits are pruned: its per-position means cost a pass over the cache).

    Without corrupted prompts the reference is the clean prompts themselves: a thin template's
    own mean would be (mostly) the prompt's own activation, so such templates use the mean over
    all prompts.
    """
    reference: ActivationCache | None
    if ablation is Ablation.DENOISING:
        reference, base_batch, base = clean.cache, corrupted_batch, corrupted.logit_diff  # type: ignore[union-attr]
    else:
        reference = corrupted.cache if corrupted is not None else clean.cache
        base_batch, base = clean_batch, clean.logit_diff
    rows = int(clean_batch.input_ids.shape[0])  # both branches of a multi-token task
    replacement = task_replacement(ablation, reference, enc, rows, seed, corrupted is not None)
    cross = other_ablation(ablation)

    def other() -> Replacement | None:
        return task_replacement(cross, reference, enc, rows, seed, corrupted is not None) if cross else None

    return base_batch, base, replacement, other


def task_replacement(ablation: Ablation, reference: ActivationCache | None, enc: EncodedTask, n_base: int,
                     seed: int, has_corrupted: bool) -> Replacement:
    """The run's replacement, template-aligned: one definition for the student, the teacher and the null.

    Mean and resample use the prompts of the same template. Without corrupted prompts the
    reference is the clean prompts, so a template needs MIN_TEMPLATE_PROMPTS of its own
    (otherwise the mean over all prompts), as a thin template's mean is mostly the prompt itself.
    """
    return Replacement(ablation, reference, n_base=n_base, seed=seed, groups=row_groups(enc),
                       min_group=1 if has_corrupted else MIN_TEMPLATE_PROMPTS)

def _attribution_check(lm: LoadedModel, task: str, base_batch: Batch, replacement: Replacement,
                       components: list[Component], effects: list[ComponentEffect], notes: list[Note],
                       memory_budget: int) -> Agreement:
    """How far a one-pass attribution estimate gets: its agreement with the exact effects (``analysis.agreement``)."""
    estimate = attribution_effects(lm.adapter, base_batch, replacement, components, memory_budget=memory_budget)
    found = agreement(np.array([e.effect for e in effects]), estimate.double().mean(1).numpy(), TOP_K_COMPONENTS)
    if found.spearman is None:
        notes.append(Note(task=task, model=lm.name, topic="attribution", code="attribution.undefined",
                          text="attribution-vs-exact rank correlation undefined (a constant input)"))
    return found


def _circuits(lm: LoadedModel, task: str, ablation: Ablation, base_batch: Batch, replacement: Replacement,
              other: Callable[[], Replacement | None], effects: list[ComponentEffect], clean: np.ndarray, base: np.ndarray,
              thresholds: Sequence[float], progress: Callable[[float], None] | None, notes: list[Note], *,
              seed: int, memory_budget: int) -> tuple[list[Circuit], CircuitCurve | None]:
    """Pruned circuits and their metric curve, only where pruning against the clean metric means something.

    ``other()`` makes the replacement for the cross-check ablation (faithfulness under the other ablation type).
    """
    prunable = ablation is not Ablation.DENOISING and clean_problem(clean) is None
    if thresholds and prunable:
        found = discover(lm.adapter, base_batch, replacement, [e.effect for e in effects], float(base.mean()),
                         thresholds, progress, seed=seed, memory_budget=memory_budget, other=other())
        return found.circuits, found.curve
    if progress is not None:  # pruning against a near-zero metric would keep or drop everything by noise
        progress(len(effects) * len(thresholds))
    if thresholds and ablation is Ablation.DENOISING:
        notes.append(Note(task=task, model=lm.name, topic="circuit", code="circuit.denoising",
                          text="no circuits under denoising (pruning keeps the clean metric; "
                               "the denoising base run is the corrupted one)"))
    return [], None


def _run_notes(name: str, task: str, ablation: Ablation, enc: EncodedTask, clean: np.ndarray,
               corrupted: np.ndarray | None) -> list[Note]:
    """Warnings about one model on one task: a metric that is not clearly positive, thin templates."""
    notes = []
    metric = metric_name(enc.branches > 1)
    why = clean_problem(clean, metric)
    if why:
        withheld = "percent of clean, circuits and paper A are withheld" if ablation.needs_corrupted else WITHHELD
        notes.append(Note(task=task, model=name, topic="metric", code="metric.clean_not_positive",
                          text=f"{why}: {withheld}"))
    if ablation.needs_corrupted:
        gap_why = relative_problem(clean, corrupted, ablation.value, metric)
        if gap_why:
            notes.append(Note(task=task, model=name, topic="metric", code="metric.gap_not_positive",
                              text=f"{gap_why}: percent of gap and drop statistics are withheld"))
    if ablation in (Ablation.MEAN, Ablation.RESAMPLE) and enc.template_ids is not None:
        what = "corrupted" if enc.has_corrupted else "reference"
        notes += [Note(task=task, model=name, topic="template", code="template.thin", text=w) for w in
                  template_warnings(enc.template_ids, enc.template_names, what, pooled=not enc.has_corrupted)]
    return notes
