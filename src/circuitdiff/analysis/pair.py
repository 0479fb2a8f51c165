"""Everything that compares the teacher's run with the student's run on one task.

Similarity of every teacher component to every student component (one registered
measure of their outputs at the read position, linear CKA by default, drives matching
and alignment; functional and layer-wise
similarity are reported beside it), the one-to-one and many-to-one matchings, the
alignment score with its bootstrap interval and null, concentration of reliance in each
model, and the circuits compared through the matching.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from circuitdiff.analysis._arrays import DegenerateRepresentationWarning, SmallSampleWarning, is_degenerate
from circuitdiff.analysis.alignment import alignment_transport, paper_alignment, paper_influence, same_kind_mask
from circuitdiff.analysis.calibration import (
    NullDraw,
    ResampledSimilarity,
    above_chance,
    alignment_interval,
    null_alignment,
)
from circuitdiff.analysis.circuits import compare_circuits
from circuitdiff.analysis.concentration import Interval, concentration_summary
from circuitdiff.analysis.influence import (
    clean_problem,
    drop_inputs,
    relative_problem,
    solved_problem,
)
from circuitdiff.analysis.matching import Match, match_many_to_one, match_one_to_one
from circuitdiff.analysis.measures import get_measure
from circuitdiff.analysis.representations import representation_notes, representation_records
from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.analysis.similarity import (
    SimilarityMeasure,
    attention_pattern_similarity,
    linear_cka,
    principal_direction_similarity,
    similarity_matrix,
)
from circuitdiff.analysis.token_alignment import MIN_SHARED, Segmentation, common_segmentation, pool_attention
from circuitdiff.schema import Note, metric_name

MATCH_MEASURE = SimilarityMeasure.LINEAR_CKA
"""The default measure behind matching and alignment (``CompareOptions.measure`` picks another)."""
MIN_PROMPTS = 4
"""Debiased CKA needs at least four distinct prompts."""


@dataclass
class PairAnalysis:
    task: str
    similarity: dict[str, pd.DataFrame]
    """teacher x student matrices: the chosen measure (drives matching), 'functional', 'layer_cka', maybe 'attention'."""
    matching: list[Match]
    many_to_one: list[Match]
    alignment: dict[str, Any]
    transport: pd.DataFrame
    concentration: dict[str, dict[str, Interval | None]]
    circuit: dict[str, Any]
    preserved: list[dict[str, Any]]
    notes: list[Note] = field(default_factory=list)
    concentration_heads: dict[str, dict[str, Interval | None]] = field(default_factory=dict)
    """The same statistics over heads alone (the reference study's robustness statistics are per head)."""
    finding: dict[str, Any] = field(default_factory=dict)
    """Whether concentration and alignment findings may be claimed: both models must solve the task."""
    representations: dict[str, list[Any]] = field(default_factory=dict)
    """Analyses 3 and 4 (``analysis.representations``): attention_roles, mlp_representation, mlp_sparsity."""

    def to_json(self) -> dict[str, Any]:
        flows = self.transport.stack()
        flows = flows[flows > 1e-4].sort_values(ascending=False)
        return {
            "alignment": self.alignment,
            "matching": [vars(m) for m in self.matching],
            "many_to_one": [vars(m) for m in self.many_to_one],
            "transport": [{"teacher": t, "student": s, "mass": float(v)} for (t, s), v in flows.items()],
            "concentration": {role: {k: (vars(v) if v else None) for k, v in summary.items()}
                              for role, summary in self.concentration.items()},
            "concentration_heads": {role: {k: (vars(v) if v else None) for k, v in summary.items()}
                                    for role, summary in self.concentration_heads.items()},
            "finding": self.finding or None,
            "circuit": self.circuit,
            "preserved": self.preserved,
            "similarity_file": "similarity.parquet",
            **{key: [r.to_json() for r in records] for key, records in self.representations.items()},
        }

    def similarity_long(self, task: str) -> pd.DataFrame:
        """All matrices as one long table: task, measure, teacher, student, value."""
        frames = []
        for measure, frame in self.similarity.items():
            long = frame.rename_axis(index="teacher", columns="student").stack().rename("value").reset_index()
            long.insert(0, "measure", measure)
            frames.append(long)
        out = pd.concat(frames, ignore_index=True)
        out.insert(0, "task", task)
        out["teacher"], out["student"] = out["teacher"].astype(str), out["student"].astype(str)
        return out


def component_similarity(t: ModelTaskRun, s: ModelTaskRun, rows: np.ndarray | None = None,
                         measure: str = MATCH_MEASURE.value) -> pd.DataFrame:
    """``measure`` (default linear CKA) of component outputs at the read position, optionally on a subset of prompts."""
    pick = (lambda x: x) if rows is None else (lambda x: x[rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        return similarity_matrix({k: pick(v) for k, v in t.read_acts.items()},
                                 {k: pick(v) for k, v in s.read_acts.items()}, measure)


def functional_matrix(t: ModelTaskRun, s: ModelTaskRun) -> pd.DataFrame:
    """Pearson correlation of per-prompt ablation effects; constant effects give 0."""
    a, b = t.per_prompt_effects, s.per_prompt_effects
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    scale = np.outer(na, nb)
    corr = np.divide(a @ b.T, scale, out=np.zeros((len(a), len(b))), where=scale > 1e-12)
    return pd.DataFrame(corr, index=[c.name for c in t.components], columns=[c.name for c in s.components])


def layer_cka(t: ModelTaskRun, s: ModelTaskRun) -> pd.DataFrame:
    """Debiased linear CKA of the residual stream at the read position, layer by layer.

    ``attrs["constant"]`` lists the layers whose representation is the same on every
    prompt (e.g. the embedding of a read token that never changes): their row or column
    is 0 because there is nothing to compare, not because they differ.
    """
    names = lambda run: ["embed"] + [f"L{i}" for i in range(run.residual_read.shape[0] - 1)]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        values = [[linear_cka(x, y) for y in s.residual_read] for x in t.residual_read]
    frame = pd.DataFrame(values, index=names(t), columns=names(s))
    frame.attrs["constant"] = ([f"teacher {n}" for n, x in zip(names(t), t.residual_read) if is_degenerate(x)]
                               + [f"student {n}" for n, y in zip(names(s), s.residual_read) if is_degenerate(y)])
    return frame


def attention_matrix(t: ModelTaskRun, s: ModelTaskRun, segments: Segmentation | None = None) -> pd.DataFrame:
    """Cosine of read-position attention patterns, position by position (identical tokenisation only) or,
    with ``segments``, pooled onto the common segments of two tokenisations (``analysis.token_alignment``)."""
    def patterns(run: ModelTaskRun, seg: np.ndarray | None) -> dict[str, np.ndarray]:
        att = run.attention_read  # (layers, n, heads, seq)
        att = att if segments is None or seg is None else pool_attention(att, seg, segments.width)
        return {f"L{l}.H{h}": att[l, :, h][:, None, :] for l in range(att.shape[0]) for h in range(att.shape[2])}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateRepresentationWarning)
        seg_t, seg_s = (None, None) if segments is None else (segments.teacher, segments.student)
        frame = similarity_matrix(patterns(t, seg_t), patterns(s, seg_s), attention_pattern_similarity)
    frame.attrs["constant"] = sum(issubclass(w.category, DegenerateRepresentationWarning) for w in caught)
    return frame


def segmentation(t: ModelTaskRun, s: ModelTaskRun) -> tuple[Segmentation | None, str | None]:
    """The common segmentation of two different tokenisations, or None and why it cannot be built."""
    if t.token_spans is None or s.token_spans is None:
        return None, ("the tokenisations differ and a model has no usable offset mapping (a fast tokenizer whose "
                      "offsets re-tokenise each prompt to its ids), so attention cannot be aligned across them")
    segments = common_segmentation(t.token_spans, s.token_spans)
    if segments.shared_share < MIN_SHARED:
        return None, (f"the two models' prompts differ (a prompt shares only {segments.shared_share:.0%} of its "
                      "text before the answer), so attention cannot be aligned across tokenisations")
    return segments, None


def _mean_effects(run: ModelTaskRun, weights: np.ndarray | None = None) -> np.ndarray:
    e = run.per_prompt_effects
    return e.mean(1) if weights is None else e @ weights


def paper_score(t: ModelTaskRun, s: ModelTaskRun, same_tokens: bool) -> tuple[float | None, str | None]:
    """The reference study's A where its ingredients exist and its influences mean something.

    Its influence |100 (1 - LD_ablated / LD_clean)| is a percentage of the clean metric: null
    when either clean metric is not clearly positive, and under denoising (where the base
    run is the corrupted one and the formula ranks components backwards).

    Heads are compared by attention-pattern cosine: position by position when both models
    tokenise identically, else on the common segments of the two tokenisations
    (``analysis.token_alignment``), so that a cross-family pair (the study's control, GPT-2
    against DistilBERT) has an A. MLPs are compared by their top-3 principal directions as
    vectors, which needs equal widths.
    """
    if t.ablation == "denoising":
        return None, "paper A is withheld under denoising (its influence is relative to the clean run)"
    for run, role in ((t, "teacher"), (s, "student")):
        why = relative_problem(run.clean, None, "mean", metric_name(run.multi_token))
        if why:
            return None, f"paper A is withheld: {role} '{run.info.name}': {why}"
    if t.info.d_model != s.info.d_model:
        return None, "paper A needs equal model widths (MLP principal directions are compared as vectors)"
    segments, why = (None, None) if same_tokens else segmentation(t, s)
    if why:
        return None, f"paper A is withheld: {why}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        heads = attention_matrix(t, s, segments)
        mlp_t = {c.name: t.read_acts[c.name] for c in t.components if c.head is None}
        mlp_s = {c.name: s.read_acts[c.name] for c in s.components if c.head is None}
        mlps = similarity_matrix(mlp_t, mlp_s, principal_direction_similarity)
        sim = pd.concat([heads, mlps]).reindex(index=[c.name for c in t.components],
                                               columns=[c.name for c in s.components])
        score = paper_alignment(paper_influence(t.ablated.mean(1), float(t.clean.mean())),
                                paper_influence(s.ablated.mean(1), float(s.clean.mean())), sim)
    messages = list(dict.fromkeys(_short(w) for w in caught))
    return score, ("paper A: " + "; ".join(messages)) if messages else None


def _short(w: warnings.WarningMessage) -> str:
    if issubclass(w.category, DegenerateRepresentationWarning):
        return "a representation is constant over prompts; its similarity counts as 0"
    return str(w.message)


def preserved_components(t: ModelTaskRun, sim: pd.DataFrame, top: int = 10) -> list[dict[str, Any]]:
    """The teacher's most influential components with their best same-kind student match."""
    rows = []
    for e in sorted(t.effects, key=lambda e: -e.share)[:top]:
        candidates = [c for c in sim.columns if (str(c).endswith(".MLP")) == (e.kind == "mlp")]
        if not candidates:
            continue
        best = sim.loc[e.name, candidates].astype(float).idxmax()
        rows.append({"teacher": e.name, "share": e.share, "student": best, "similarity": float(sim.loc[e.name, best])})
    return sorted(rows, key=lambda r: -r["similarity"])


def robustness(run: ModelTaskRun, *, heads_only: bool = False, n_boot: int = 1000,
               seed: int = 0) -> dict[str, Interval | None]:
    """Concentration and drop statistics of one run (over heads alone if asked).

    Drops are relative to the clean metric for ablations and to the clean - corrupted gap
    for patching (``influence.drop_inputs``). Every statistic is None when the components
    have no effect at all (there is no distribution of reliance to describe).
    """
    effects, norm = drop_inputs(run.per_prompt_effects, run.clean, run.corrupted, run.ablation)
    if heads_only:
        effects = effects[[c.head is not None for c in run.components]]
    if effects.size and np.any(effects.mean(axis=1)):
        return concentration_summary(effects, norm, n_boot=n_boot, seed=seed)
    keys = concentration_summary(np.ones((1, 2)), np.ones(2), n_boot=1)  # the same statistic names
    return dict.fromkeys(keys)


def task_finding(t: ModelTaskRun, s: ModelTaskRun) -> dict[str, Any]:
    """Findings are claimed only when both models solve the task; otherwise say which does not, and why."""
    reasons = [f"{role} '{run.info.name}' does not solve the task: {why}" for run, role in ((t, "teacher"), (s, "student"))
               if (why := solved_problem(run.clean, metric_name(run.multi_token)))]
    return {"claimed": not reasons, "reason": "; ".join(reasons) or None}


def _constant_notes(task: str, layer_frame: pd.DataFrame) -> list[Note]:
    constant = layer_frame.attrs.get("constant") or []
    if not constant:
        return []
    why = ("every prompt ends in the same token at the same position" if all(c.endswith(" embed") for c in constant)
           else "e.g. an embedding of a read token that never changes")
    return [Note(task=task, topic="similarity", code="similarity.constant_layer",
                 text=f"the layer-by-layer CKA figure has nothing to compare for {', '.join(constant)}: the residual "
                      f"stream at the read position is the same on every prompt ({why}). It is drawn as 0, which "
                      "does not mean 'dissimilar'; no other figure is affected.")]


def analyse_runs(
    t: ModelTaskRun,
    s: ModelTaskRun,
    *,
    same_tokens: bool,
    null_draws: Sequence[NullDraw] = (),
    n_boot: int = 1000,
    seed: int = 0,
    measure: str = MATCH_MEASURE.value,
) -> PairAnalysis:
    """All pairwise analyses of one task (the models themselves are no longer needed).

    ``measure`` names the registered similarity measure behind matching and alignment.

    BLAS runs single-threaded here: every matrix is small, and under contention a second
    thread only waits (see README, performance).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _analyse(t, s, same_tokens, null_draws, n_boot, seed, measure)


def alignment_summary(
    t: ModelTaskRun, s: ModelTaskRun, sim: pd.DataFrame, null_draws: Sequence[NullDraw], n_boot: int, seed: int,
    measure: str = MATCH_MEASURE.value,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The score with its transport plan, BCa interval, chance level and verdict (``analysis.calibration``).

    Withheld (score None, an empty plan, ``withheld`` saying why) where a model's influence is zero for every
    component, e.g. when patching with corrupted prompts that equal the clean ones: there is no reliance to carry.
    """
    silent = [role for role, run in (("teacher", t), ("student", s)) if not np.abs(_mean_effects(run)).sum() > 0]
    if silent:
        why = (f"the alignment score is withheld: no component of the {' or the '.join(silent)} changes the metric "
               "under this ablation, so there is no reliance to compare")
        empty = pd.DataFrame(0.0, index=sim.index, columns=sim.columns)
        return {"score": None, "ci": [None, None], "null": None, "null_q95": None, "n_null": 0, "null_values": [],
                "null_check": None, "above_chance": None, "measure": measure, "level": 0.95, "withheld": why}, empty
    transport = alignment_transport(_mean_effects(t), _mean_effects(s), sim)
    score = float(transport.attrs["score"])
    mask = same_kind_mask(sim)
    kind = get_measure(measure)
    interval = alignment_interval((t.per_prompt_effects, s.per_prompt_effects),
                                  ResampledSimilarity(kind, t.read_acts, s.read_acts), mask, score, n_boot, seed)
    null = (null_alignment(_mean_effects(t), t.read_acts, mask, null_draws, list(s.read_acts), kind) if null_draws
            else {"null": None, "null_q95": None, "n_null": 0, "null_values": [], "null_check": None})
    alignment = {"score": score, **interval, **null, "above_chance": above_chance(interval["ci"], null["null_q95"]),
                 "measure": measure, "level": 0.95}
    return alignment, transport


def _analyse(
    t: ModelTaskRun, s: ModelTaskRun, same_tokens: bool, null_draws: Sequence[NullDraw], n_boot: int, seed: int,
    measure: str,
) -> PairAnalysis:
    notes: list[Note] = list(dict.fromkeys(t.notes + s.notes))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        sim = component_similarity(t, s, measure=measure)
    notes += [Note(task=t.task, topic="similarity", code="similarity.small_sample", text=str(w.message))
              for w in caught if issubclass(w.category, SmallSampleWarning)]
    dead = sim.attrs.get("dead_teacher", []) + sim.attrs.get("dead_student", [])
    if dead:
        notes.append(Note(task=t.task, topic="similarity", code="similarity.constant_component",
                          text=f"{len(dead)} component(s) with constant output get similarity 0: {', '.join(dead[:8])}"))
    matrices = {measure: sim, "functional": functional_matrix(t, s), "layer_cka": layer_cka(t, s)}
    notes += _constant_notes(t.task, matrices["layer_cka"])
    has_attention = t.attention_read is not None and s.attention_read is not None
    segments = None if same_tokens or not has_attention else segmentation(t, s)[0]
    if has_attention and (same_tokens or segments is not None):
        matrices["attention"] = attention_matrix(t, s, segments)
        if matrices["attention"].attrs.get("constant"):
            notes.append(Note(task=t.task, topic="similarity", code="similarity.constant_attention",
                              text=f"{matrices['attention'].attrs['constant']} attention-pattern similarities compare "
                                   "a pattern that is the same on every prompt; they are set to 0, not measured"))
    alignment, transport = alignment_summary(t, s, sim, null_draws, n_boot, seed, measure)
    if alignment.get("withheld"):
        notes.append(Note(task=t.task, topic="alignment", code="alignment.withheld", text=alignment["withheld"]))
    else:
        notes += null_notes(t.task, alignment, bool(null_draws)) + resampling_notes(t.task, alignment)
    no_circuit = {role: _no_circuit_note(t.task, role, run) for run, role in ((t, "teacher"), (s, "student"))
                  if not run.circuits}
    notes += no_circuit.values()
    paper, why = paper_score(t, s, same_tokens) if has_attention else (None, "paper A needs attention patterns (eager attention)")
    if why:
        code = "paper.withheld" if paper is None else "paper.caveat"
        notes.append(Note(task=t.task, topic="paper", code=code, text=why))
    if paper is not None and not same_tokens:
        notes.append(Note(task=t.task, topic="paper", code="paper.aligned",
                          text="paper A: the models tokenise differently; head attention is compared on the common "
                               "segments of the two tokenisations (README: paper A across tokenisations)"))
    alignment["paper"] = paper
    matching = match_one_to_one(sim)
    concentration = {role: robustness(run, n_boot=n_boot, seed=seed) for role, run in (("teacher", t), ("student", s))}
    heads_only = {role: robustness(run, heads_only=True, n_boot=n_boot, seed=seed) for role, run in (("teacher", t), ("student", s))}
    notes += interval_notes(t.task, alignment, concentration)
    notes += representation_notes(t, s, matching, same_tokens)
    finding = task_finding(t, s)
    if not finding["claimed"]:
        notes.append(Note(task=t.task, topic="finding", code="finding.withheld",
                          text=f"no concentration or alignment finding: {finding['reason']}"))
    return PairAnalysis(
        task=t.task,
        similarity=matrices,
        matching=matching,
        many_to_one=match_many_to_one(sim),
        alignment=alignment,
        transport=transport,
        concentration=concentration,
        circuit=compare_circuits(t.circuits, s.circuits, matching,
                                 {"teacher": t.circuit_curve, "student": s.circuit_curve},
                                 {role: note.text for role, note in no_circuit.items()}),
        preserved=preserved_components(t, sim),
        notes=list(dict.fromkeys(notes)),
        concentration_heads=heads_only,
        finding=finding,
        representations=representation_records(t, s, matching, same_tokens, n_boot, seed),
    )


def _no_circuit_note(task: str, role: str, run: ModelTaskRun) -> Note:
    """Why a model has no circuit: denoising, no clean signal to prune against, or discovery switched off."""
    problem = clean_problem(run.clean, metric_name(run.multi_token))
    if run.ablation == "denoising":
        code, why = "circuit.denoising", "circuits are not pruned under denoising (the base run is the corrupted one)"
    elif problem:
        code, why = "circuit.no_signal", f"there is nothing to prune against: {problem}"
    else:
        code, why = "circuit.off", "circuit discovery was off"
    return Note(task=task, role=role, model=None, topic="circuit", code=code, text=f"no {role} circuit: {why}")


def interval_notes(
    task: str, alignment: dict[str, Any], concentration: dict[str, dict[str, Interval | None]]
) -> list[Note]:
    """Say why an interval is missing (``bootstrap.bca_interval``): bias beyond the spread, or no valid resample."""
    missing = [(f"{role} {name}", iv.n_valid) for role, stats in concentration.items() for name, iv in stats.items()
               if iv is not None and np.isfinite(iv.point) and not np.isfinite(iv.lo)]
    if alignment["score"] is not None and np.isfinite(alignment["score"]) and not np.isfinite(alignment["ci"][0]):
        missing.insert(0, ("alignment score", alignment["n_boot"]))
    biased = [name for name, valid in missing if valid > 0]
    empty = [name for name, valid in missing if valid == 0]
    notes = []
    if biased:
        notes.append(Note(task=task, topic="interval", code="interval.biased",
                          text=f"no interval for {', '.join(biased)}: the point estimate lies beyond 97.5% of its "
                               "bootstrap resamples, so the statistic's bias exceeds its spread at this number of prompts"))
    if empty:
        notes.append(Note(task=task, topic="interval", code="interval.empty",
                          text=f"no interval for {', '.join(empty)}: no resample had enough distinct prompts"))
    return notes


def resampling_notes(task: str, alignment: dict[str, Any]) -> list[Note]:
    """Say when the interval's similarity is recomputed on distinct prompts (the measure takes no prompt weights)."""
    if alignment.get("similarity_resampling") != "distinct_prompts":
        return []
    return [Note(task=task, topic="interval", code="interval.distinct_prompts",
                 text=f"{alignment['measure']} takes no prompt weights: on each bootstrap resample its similarity is "
                      "recomputed on the distinct prompts drawn (duplicates dropped), while the effects count "
                      "each prompt as often as drawn")]


NULL_CHECK_TOLERANCE = 0.02
"""Largest change of a null score, when checked components get their exact effects, that passes silently."""


def null_notes(task: str, alignment: dict[str, Any], wanted: bool) -> list[Note]:
    """Warnings about the chance level: missing, or its attribution estimates off on the checked draw."""
    notes = []
    if wanted and alignment["null"] is None:
        notes.append(Note(task=task, topic="null", code="null.undefined",
                          text="null score undefined (no random student had any influence)"))
    check = alignment.get("null_check")
    if check and abs(check["score_with_exact"] - check["score_estimated"]) > NULL_CHECK_TOLERANCE:
        notes.append(Note(task=task, topic="null", code="null.inexact",
                          text=f"the null's attribution estimates are off: with exact effects for "
                               f"{len(check['components'])} components the checked draw scores "
                               f"{check['score_with_exact']:.3f} instead of {check['score_estimated']:.3f}"))
    return notes
