"""How far to trust an alignment score: its bootstrap interval and its chance level.

**Interval.** Prompts are resampled with replacement; on each resample the effects are
the weighted means. The similarity depends on the measure (``analysis.measures``). A
measure with prompt weights (linear CKA: the *weighted* debiased CKA of
``cka.weighted_cka_matrix``) counts each prompt as often as it was drawn and never pairs
it with its own copy, exactly the estimator of the point estimate, with all prompts
kept; every component is prepared once and only re-weighted per resample. Any other
measure is recomputed on each resample's *distinct* prompts (a fallback, named
``"distinct_prompts"`` in ``similarity_resampling``): duplicates would make a measure
without weights see a copy of a prompt as agreement.
The score is a maximum over couplings, so noise in the similarity raises it: the point
estimate sits low in its bootstrap distribution for weakly aligned pairs. The interval
is therefore BCa (``bootstrap.bca_interval``), which corrects for that bias; it contains
the point whenever at least 2.5% of the resamples lie on each side of it, and is not
given otherwise.

**Chance level.** The same score against ``n_null`` randomly initialised students of the
student's architecture (seeded draws, ``circuitdiff.null``): ``null`` is their median,
``null_q95`` their 95% quantile (linear interpolation). The verdict ``above_chance`` is
true when the interval's lower bound exceeds ``null_q95``: a score counts as above
chance only when even its pessimistic end beats 95% of what unrelated students reach,
so neither the prompts' noise nor the luck of one random draw can make the claim. For a
student drawn like the null, the score alone would exceed the interpolated q95 of ten
draws about 1.45 times in 11 (exchangeable draws); its lower bound does so more rarely
(the test asks at most 2 in 10). With fewer draws the quantile is the maximum or less,
hence the default of 10.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from circuitdiff.analysis._arrays import as_matrix, is_degenerate
from circuitdiff.analysis.alignment import score_arrays
from circuitdiff.analysis.bootstrap import bca_interval, bootstrap_indices, share_above
from circuitdiff.analysis.cka import zero_diagonal_gram
from circuitdiff.analysis.measures import Measure, get_measure, takes_prompt_weights

NULL_QUANTILE = 0.95


@dataclass(frozen=True)
class NullDraw:
    """One randomly initialised student on one task: only what the chance level reads."""

    seed: int
    """The torch seed the random student was initialised with."""
    read_acts: dict[str, np.ndarray]
    """Component outputs at the read position, (n_prompts, width) each, in component order."""
    effects: np.ndarray
    """Mean effect per component (attribution patching), in ``read_acts`` order."""
    checked: dict[str, float] | None = None
    """Exact effects of the components whose estimate was checked (the first draw only)."""


class ResampledSimilarity:
    """Teacher x student similarity under prompt weights, for one measure (see the module docstring)."""

    def __init__(self, measure: Measure, teacher: Mapping[str, np.ndarray], student: Mapping[str, np.ndarray]) -> None:
        self.measure = measure
        self.weighted = takes_prompt_weights(measure)
        self.acts = [[as_matrix(v, k) for k, v in side.items()] for side in (teacher, student)]
        if self.weighted:
            prepare = measure.prepare_weighted  # type: ignore[attr-defined]
            self.prepared = [np.stack([prepare(x) for x in side]) for side in self.acts]

    @property
    def method(self) -> str:
        """How resamples are compared: ``weighted`` (the point's estimator) or ``distinct_prompts`` (fallback)."""
        return "weighted" if self.weighted else "distinct_prompts"

    def __call__(self, w: np.ndarray) -> np.ndarray:
        if self.weighted:
            return self.measure.compare_weighted(*self.prepared, w)  # type: ignore[attr-defined]
        rows = np.flatnonzero(w > 0)
        live = [[x[rows] for x in side] for side in self.acts]
        dead = [[is_degenerate(x) for x in side] for side in live]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = np.asarray(self.measure.compare_all([self.measure.prepare(x) for x in live[0]],
                                                      [self.measure.prepare(x) for x in live[1]]), dtype=np.float64)
        sim[np.asarray(dead[0]), :] = 0.0  # constant on these prompts: compares as 0, as in similarity_matrix
        sim[:, np.asarray(dead[1])] = 0.0
        return sim


def read_grams(read_acts: Mapping[str, np.ndarray]) -> np.ndarray:
    """(components, n, n) zero-diagonal, unit-norm Gram matrices; zeros for dead components."""
    grams = []
    for name, acts in read_acts.items():
        x = as_matrix(acts, name)
        grams.append(np.zeros((len(x), len(x))) if is_degenerate(x) else zero_diagonal_gram(x))
    return np.stack(grams)


def _score(et: np.ndarray, es: np.ndarray, similarity: ResampledSimilarity, mask: np.ndarray, w: np.ndarray) -> float:
    """The alignment score with every prompt weighted by ``w`` (all ones: the point estimate)."""
    try:
        return score_arrays(et @ w / w.sum(), es @ w / w.sum(), similarity(w), mask)
    except ValueError:  # fewer than 4 distinct prompts, or no influence on this resample
        return float("nan")


def alignment_interval(
    effects: tuple[np.ndarray, np.ndarray], similarity: ResampledSimilarity, mask: np.ndarray,
    point: float, n_boot: int, seed: int, level: float = 0.95,
) -> dict[str, Any]:
    """BCa interval of the score over prompt resamples, and the share of resamples above the point.

    ``effects``: per-prompt effects (components x prompts) of teacher and student;
    ``similarity``: their component outputs under the measure; ``mask``: usable cells
    (``alignment.same_kind_mask``).
    """
    et, es = effects
    n = et.shape[1]
    boot = np.array([_score(et, es, similarity, mask, np.bincount(idx, minlength=n).astype(np.float64))
                     for idx in bootstrap_indices(n, n_boot, seed)])
    jack = np.array([_score(et, es, similarity, mask, np.where(np.arange(n) == i, 0.0, 1.0)) for i in range(n)])
    lo, hi = bca_interval(point, boot, jack, level)
    return {"ci": [lo, hi], "ci_method": "bca", "n_boot": int(np.isfinite(boot).sum()),
            "share_above_point": share_above(point, boot), "similarity_resampling": similarity.method}


def null_alignment(
    teacher_effects: np.ndarray, teacher_acts: Mapping[str, np.ndarray], mask: np.ndarray, draws: Sequence[NullDraw],
    names: Sequence[str], measure: Measure | None = None,
) -> dict[str, Any]:
    """Median, 95% quantile and values of the score against each random student, plus the exactness check.

    ``teacher_effects``: the teacher's mean effects; ``teacher_acts``: its read-position
    outputs; ``names``: the student's component names (the draws' order); ``mask``: usable
    teacher x student cells; ``measure``: the similarity (default linear CKA). The check
    recomputes the first draw's score with its checked components' exact effects in place
    of the estimates.
    """
    measure = measure or get_measure("linear_cka")
    values: list[float] = []
    check: dict[str, Any] | None = None
    t_mean = np.asarray(teacher_effects, dtype=np.float64)
    pos = {nm: i for i, nm in enumerate(names)}
    for draw in draws:
        sim = ResampledSimilarity(measure, teacher_acts, draw.read_acts)(np.ones(_rows(draw)))
        values.append(_null_score(t_mean, draw.effects, sim, mask))
        if draw.checked:
            exact = draw.effects.copy()
            for nm, value in draw.checked.items():
                exact[pos[nm]] = value
            estimated = np.array([draw.effects[pos[nm]] for nm in draw.checked])
            truth = np.array(list(draw.checked.values()))
            scale = float(np.max(np.abs(truth))) or 1.0
            check = {"seed": draw.seed, "components": list(draw.checked),
                     "max_relative_error": float(np.max(np.abs(estimated - truth)) / scale),
                     "score_estimated": values[-1], "score_with_exact": _null_score(t_mean, exact, sim, mask)}
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if finite.size == 0:
        return {"null": None, "null_q95": None, "n_null": 0, "null_values": values, "null_check": check}
    return {"null": float(np.median(finite)), "null_q95": float(np.quantile(finite, NULL_QUANTILE)),
            "n_null": int(finite.size), "null_values": values, "null_check": check}


def _rows(draw: NullDraw) -> int:
    return len(next(iter(draw.read_acts.values())))


def _null_score(t_mean: np.ndarray, s_mean: np.ndarray, sim: np.ndarray, mask: np.ndarray) -> float:
    try:
        return score_arrays(t_mean, s_mean, sim, mask)
    except ValueError:
        return float("nan")


def above_chance(ci: Sequence[float], null_q95: float | None) -> bool | None:
    """The verdict: the interval's lower bound above the null's 95% quantile (None if either is missing)."""
    lo = ci[0] if ci else None
    if lo is None or null_q95 is None or not np.isfinite(lo) or not np.isfinite(null_q95):
        return None
    return bool(lo > null_q95)
