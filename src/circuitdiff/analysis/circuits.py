"""Circuits as plain data, and their comparison: no model runs here.

Discovery (which runs models) lives in ``circuitdiff.circuits``; it returns these records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circuitdiff.analysis.matching import Match

DEFAULT_THRESHOLD = 0.2
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Circuit:
    """The minimal circuit at one threshold and the measures of it that pruning does not fix.

    ``faithfulness`` (metric with only the circuit kept, over clean, under the run's ablation)
    lies in [1 - T, 1 + T] by construction of the pruning; ``faithfulness_other`` is the same
    under the other ablation type and is not constrained. ``completeness_gap`` is Wang et al.
    (2022)'s incompleteness max_K |F(C \\ K) - F(M \\ K)| over the sampled subsets K of the
    circuit, in units of |clean| (0 is complete). ``necessity`` = 1 - F(M \\ C) / clean, the
    share of the behaviour lost when only the circuit is ablated.
    """

    threshold: float
    components: list[str]
    size: int
    faithfulness: float
    faithfulness_other: float | None = None
    other_ablation: str | None = None
    completeness_gap: float | None = None
    completeness_worst_k: list[str] = field(default_factory=list)
    completeness_n_subsets: int = 0
    completeness_greedy_gap: float | None = None
    necessity: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CircuitCurve:
    """Mean metric with only the ``size`` most influential components kept (the rest ablated at once).

    Every point is an exactly evaluated forward pass; size 0 is the fully ablated model and
    size = all components is the clean model. ``order`` lists components most influential first.
    """

    sizes: list[int]
    metric: list[float]
    clean: float
    order: list[str]

    @property
    def fraction(self) -> list[float]:
        return [m / self.clean if self.clean else float("nan") for m in self.metric]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "fraction_of_clean": self.fraction}


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def compare_circuits(t_circuits: list[Circuit], s_circuits: list[Circuit], matching: list[Match],
                     curves: dict[str, CircuitCurve | None] | None = None,
                     missing: dict[str, str] | None = None) -> dict[str, Any]:
    """Each model's circuits per threshold, and where both models have one, the comparison: the student's
    mapped onto teacher names through the matching, their overlap and the teacher's recall.

    A model's circuits are kept whether or not the other model has any; where it has none (``missing``:
    role -> why) the entry's comparison is None and ``comparison_withheld`` says why. Pruning is a greedy
    walk, so one model's circuits at different thresholds need not be nested: each circuit carries its
    Jaccard overlap with the same model's circuit at every other threshold (``overlap_with_thresholds``)
    and ``nested`` says, per model, whether every larger threshold's circuit lies inside every smaller
    one's. ``curves``: role -> metric curve, when circuits were discovered.
    """
    to_teacher = {m.student: m.teacher for m in matching}
    by_role = {"teacher": {c.threshold: c for c in t_circuits}, "student": {c.threshold: c for c in s_circuits}}
    withheld = "; ".join((missing or {}).get(role) or f"no {role} circuit" for role, found in by_role.items()
                         if not found) or None
    out: dict[str, Any] = {"thresholds": []}
    if curves and any(c is not None for c in curves.values()):
        out["curve"] = {role: c.to_json() if c is not None else None for role, c in curves.items()}
    for threshold in sorted(set(by_role["teacher"]) | set(by_role["student"])):
        tc, sc = by_role["teacher"].get(threshold), by_role["student"].get(threshold)
        entry: dict[str, Any] = {
            "threshold": threshold,
            "teacher": tc.to_json() if tc else None,
            "student": sc.to_json() if sc else None,
            "student_mapped_to_teacher": None, "overlap_jaccard": None, "teacher_recall": None,
            "overlap_with_thresholds": {role: _threshold_overlaps(found, threshold)
                                        for role, found in by_role.items() if threshold in found},
        }
        if tc is not None and sc is not None:
            mapped = [to_teacher[c] for c in sc.components if c in to_teacher]
            entry.update(student_mapped_to_teacher=mapped, overlap_jaccard=jaccard(tc.components, mapped),
                         teacher_recall=(len(set(tc.components) & set(mapped)) / len(tc.components)
                                         if tc.components else 1.0))
        else:
            absent = "student" if sc is None else "teacher"
            entry["comparison_withheld"] = withheld or f"no {absent} circuit at this threshold"
        out["thresholds"].append(entry)
    default = min(out["thresholds"], key=lambda e: abs(e["threshold"] - 0.2)) if out["thresholds"] else None
    if default is not None:
        out.update({role: (default[role] or {}).get("components", []) for role in by_role},
                   threshold=default["threshold"], overlap_jaccard=default["overlap_jaccard"],
                   nested={role: _nested(found) for role, found in by_role.items() if found})
    if withheld and out["thresholds"]:
        out["comparison_withheld"] = withheld
    return out


def _threshold_overlaps(circuits: dict[float, Circuit], threshold: float) -> list[dict[str, float]]:
    """Jaccard overlap of the circuit at ``threshold`` with the same model's circuit at every other threshold."""
    own = circuits[threshold].components
    return [{"threshold": t, "jaccard": jaccard(own, c.components)}
            for t, c in sorted(circuits.items()) if t != threshold]


def _nested(circuits: dict[float, Circuit]) -> bool:
    """Whether each larger threshold's circuit (more loss allowed, fewer components) lies inside each smaller one's."""
    ordered = [set(c.components) for _, c in sorted(circuits.items())]
    return all(later <= earlier for earlier, later in zip(ordered, ordered[1:]))
