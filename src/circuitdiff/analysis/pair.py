"""Everything that compares the teacher's run with the student's run on one task.

Similarity of every teacher component to every student component (linear CKA of their
outputs at the read position drives matching and alignment; functional and layer-wise
similarity are reported beside it), the one-to-one and many-to-one matchings, the
alignment score with its bootstrap interval and null, concentration of reliance in each
model, and the circuits compared through the matching.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from circuitdiff.analysis._arrays import DegenerateRepresentationWarning, SmallSampleWarning
from circuitdiff.analysis.alignment import alignment_score, alignment_transport, paper_alignment, paper_influence
from circuitdiff.analysis.bootstrap import bootstrap_indices, percentile_interval
from circuitdiff.analysis.circuits import Circuit, CircuitCurve, jaccard
from circuitdiff.analysis.concentration import Interval, concentration_summary
from circuitdiff.analysis.matching import Match, match_many_to_one, match_one_to_one
from circuitdiff.analysis.similarity import (
    SimilarityMeasure,
    attention_pattern_similarity,
    linear_cka,
    principal_direction_similarity,
    similarity_matrix,
)
from circuitdiff.pipeline import ModelTaskRun

MATCH_MEASURE = SimilarityMeasure.LINEAR_CKA
MIN_PROMPTS = 4
"""Debiased CKA needs at least four distinct prompts."""
N_BOOT_ALIGNMENT = 200


@dataclass
class PairAnalysis:
    task: str
    similarity: dict[str, pd.DataFrame]
    """teacher x student matrices: 'linear_cka' (drives matching), 'functional', 'layer_cka', maybe 'attention'."""
    matching: list[Match]
    many_to_one: list[Match]
    alignment: dict[str, Any]
    transport: pd.DataFrame
    concentration: dict[str, dict[str, Interval | None]]
    circuit: dict[str, Any]
    preserved: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

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
            "circuit": self.circuit,
            "preserved": self.preserved,
            "similarity_file": "similarity.parquet",
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


def component_similarity(t: ModelTaskRun, s: ModelTaskRun, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Linear CKA of component outputs at the read position, optionally on a subset of prompts."""
    pick = (lambda x: x) if rows is None else (lambda x: x[rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        return similarity_matrix({k: pick(v) for k, v in t.read_acts.items()},
                                 {k: pick(v) for k, v in s.read_acts.items()}, MATCH_MEASURE)


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
    """Debiased linear CKA of the residual stream at the read position, layer by layer."""
    names = lambda run: ["embed"] + [f"L{i}" for i in range(run.residual_read.shape[0] - 1)]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        values = [[linear_cka(x, y) for y in s.residual_read] for x in t.residual_read]
    return pd.DataFrame(values, index=names(t), columns=names(s))


def attention_matrix(t: ModelTaskRun, s: ModelTaskRun) -> pd.DataFrame:
    """Cosine of read-position attention patterns; only meaningful with identical tokenisation."""
    def patterns(run: ModelTaskRun) -> dict[str, np.ndarray]:
        att = run.attention_read  # (layers, n, heads, seq)
        return {f"L{l}.H{h}": att[l, :, h][:, None, :] for l in range(att.shape[0]) for h in range(att.shape[2])}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        return similarity_matrix(patterns(t), patterns(s), attention_pattern_similarity)


def _mean_effects(run: ModelTaskRun, weights: np.ndarray | None = None) -> np.ndarray:
    e = run.per_prompt_effects
    return e.mean(1) if weights is None else e @ weights


def alignment_interval(t: ModelTaskRun, s: ModelTaskRun, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the score over prompt resamples.

    Each resample recomputes mean effects on the resampled prompts, and the similarity on
    the distinct prompts it drew (debiased CKA assumes distinct samples, so duplicates are
    not fed to it). That is conservative: similarity is estimated from ~63% of the prompts.
    """
    n = len(t.clean)
    scores = []
    for idx in bootstrap_indices(n, n_boot, seed):
        distinct = np.unique(idx)
        if len(distinct) < MIN_PROMPTS:
            continue
        weights = np.bincount(idx, minlength=n) / n
        sim = component_similarity(t, s, distinct)
        try:
            scores.append(alignment_score(_mean_effects(t, weights), _mean_effects(s, weights), sim))
        except ValueError:
            continue
    return percentile_interval(np.asarray(scores), level) if scores else (float("nan"), float("nan"))


def paper_score(t: ModelTaskRun, s: ModelTaskRun, same_tokens: bool) -> tuple[float | None, str | None]:
    """The reference study's A where its ingredients exist (same tokenisation and width)."""
    if not same_tokens:
        return None, "paper A needs identical tokenisation (attention patterns are compared position by position)"
    if t.info.d_model != s.info.d_model:
        return None, "paper A needs equal model widths (MLP principal directions are compared as vectors)"
    heads = attention_matrix(t, s)
    mlp_t = {c.name: t.read_acts[c.name] for c in t.components if c.head is None}
    mlp_s = {c.name: s.read_acts[c.name] for c in s.components if c.head is None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        mlps = similarity_matrix(mlp_t, mlp_s, principal_direction_similarity)
    sim = pd.concat([heads, mlps]).reindex(index=[c.name for c in t.components], columns=[c.name for c in s.components])
    clean_t, clean_s = float(t.clean.mean()), float(s.clean.mean())
    if clean_t == 0 or clean_s == 0:
        return None, "paper A is undefined when a clean logit difference is 0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return paper_alignment(paper_influence(t.ablated.mean(1), clean_t), paper_influence(s.ablated.mean(1), clean_s), sim), None


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


def compare_circuits(t_circuits: list[Circuit], s_circuits: list[Circuit], matching: list[Match],
                     curves: dict[str, CircuitCurve | None] | None = None) -> dict[str, Any]:
    """Circuits of both models, with the student's mapped onto teacher names through the matching,
    and each model's metric curve (``curves``: role -> curve) when circuits were discovered."""
    to_teacher = {m.student: m.teacher for m in matching}
    out: dict[str, Any] = {"thresholds": []}
    if curves and any(c is not None for c in curves.values()):
        out["curve"] = {role: c.to_json() if c is not None else None for role, c in curves.items()}
    for tc, sc in zip(t_circuits, s_circuits):
        mapped = [to_teacher[c] for c in sc.components if c in to_teacher]
        entry = {
            "threshold": tc.threshold,
            "teacher": tc.to_json(),
            "student": sc.to_json(),
            "student_mapped_to_teacher": mapped,
            "overlap_jaccard": jaccard(tc.components, mapped),
            "teacher_recall": len(set(tc.components) & set(mapped)) / len(tc.components) if tc.components else 1.0,
        }
        out["thresholds"].append(entry)
    default = min(out["thresholds"], key=lambda e: abs(e["threshold"] - 0.2)) if out["thresholds"] else None
    if default is not None:
        out.update(teacher=default["teacher"]["components"], student=default["student"]["components"],
                   threshold=default["threshold"], overlap_jaccard=default["overlap_jaccard"])
        base = set(default["teacher"]["components"])
        for e in out["thresholds"]:
            e["teacher_jaccard_vs_default"] = jaccard(e["teacher"]["components"], list(base))
    return out


def analyse_runs(
    t: ModelTaskRun,
    s: ModelTaskRun,
    *,
    same_tokens: bool,
    null_run: ModelTaskRun | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> PairAnalysis:
    """All pairwise analyses of one task (the models themselves are no longer needed)."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        sim = component_similarity(t, s)
    notes += [str(w.message) for w in caught if issubclass(w.category, SmallSampleWarning)]
    dead = sim.attrs.get("dead_teacher", []) + sim.attrs.get("dead_student", [])
    if dead:
        notes.append(f"{t.task}: {len(dead)} component(s) with constant output get similarity 0: {', '.join(dead[:8])}")
    matrices = {MATCH_MEASURE.value: sim, "functional": functional_matrix(t, s), "layer_cka": layer_cka(t, s)}
    has_attention = t.attention_read is not None and s.attention_read is not None
    if same_tokens and has_attention:
        matrices["attention"] = attention_matrix(t, s)
    t_eff, s_eff = _mean_effects(t), _mean_effects(s)
    transport = alignment_transport(t_eff, s_eff, sim)
    lo, hi = alignment_interval(t, s, min(n_boot, N_BOOT_ALIGNMENT), seed)
    null = None
    if null_run is not None:
        try:
            null = alignment_score(t_eff, _mean_effects(null_run), component_similarity(t, null_run))
        except ValueError as exc:
            notes.append(f"{t.task}: null score undefined ({exc})")
    for run, role in ((t, "teacher"), (s, "student")):
        if not run.circuits:
            notes.append(f"{t.task}: no {role} circuit (clean logit difference too close to 0, or circuits off)")
    paper, why = paper_score(t, s, same_tokens) if has_attention else (None, "paper A needs attention patterns (eager attention)")
    if why:
        notes.append(f"{t.task}: {why}")
    matching = match_one_to_one(sim)
    alignment = {"score": float(transport.attrs["score"]), "ci": [lo, hi], "null": null, "paper": paper,
                 "measure": MATCH_MEASURE.value, "level": 0.95}
    concentration = {
        role: concentration_summary(run.per_prompt_effects, run.clean, n_boot=n_boot, seed=seed)
        for role, run in (("teacher", t), ("student", s))
    }
    return PairAnalysis(
        task=t.task,
        similarity=matrices,
        matching=matching,
        many_to_one=match_many_to_one(sim),
        alignment=alignment,
        transport=transport,
        concentration=concentration,
        circuit=compare_circuits(t.circuits, s.circuits, matching,
                                 {"teacher": t.circuit_curve, "student": s.circuit_curve}),
        preserved=preserved_components(t, sim),
        warnings=notes,
    )
