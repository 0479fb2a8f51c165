"""Representation similarity between teacher and student components.

Every function takes activation matrices with one row per prompt (same prompts, same
order on both sides) and any widths. A constant ("dead") representation has similarity
0.0, never NaN; the functions say so with a ``DegenerateRepresentationWarning`` and
``similarity_matrix`` also lists the dead components in ``DataFrame.attrs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from enum import Enum

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import (
    DegenerateRepresentationWarning,
    Float64Array,
    SmallSampleWarning,
    as_matrix,
    is_degenerate,
)
from circuitdiff.analysis.cca import pwcca, svcca
from circuitdiff.analysis.cka import linear_cka, rbf_cka
from circuitdiff.analysis.measures import get_measure, measure_names
from circuitdiff.analysis.pairwise import (
    attention_pattern_similarity,
    functional_similarity,
    principal_direction_similarity,
    procrustes_similarity,
)

__all__ = [
    "DegenerateRepresentationWarning",
    "SimilarityMeasure",
    "SmallSampleWarning",
    "attention_pattern_similarity",
    "functional_similarity",
    "is_degenerate",
    "linear_cka",
    "principal_direction_similarity",
    "procrustes_similarity",
    "pwcca",
    "rbf_cka",
    "similarity_matrix",
    "svcca",
]


SimilarityMeasure = Enum(  # type: ignore[misc]
    "SimilarityMeasure", {name.upper(): name for name in measure_names()}, type=str, module=__name__)
"""Registered similarity measures (``circuitdiff.analysis.measures``: one file per measure)."""


PairFunction = Callable[[np.ndarray, np.ndarray], float]


def _load(side: Mapping[str, ArrayLike], label: str) -> tuple[list[str], list[Float64Array]]:
    if not side:
        raise ValueError(f"no {label} components given")
    names = [str(k) for k in side]
    return names, [as_matrix(v, f"{label} {k}") for k, v in side.items()]


def similarity_matrix(
    teacher: Mapping[str, ArrayLike],
    student: Mapping[str, ArrayLike],
    measure: SimilarityMeasure | str | PairFunction = SimilarityMeasure.LINEAR_CKA,
    *,
    debiased: bool = True,
    sigma_frac: float = 0.8,
    keep_variance: float | None = None,
    max_dims: int | None = None,
) -> pd.DataFrame:
    """Similarity of every teacher component (rows) to every student component (columns).

    ``teacher``/``student`` map component names to (n_prompts, width) activations, same
    prompts everywhere. CKA keeps one centred Gram matrix per component (memory
    O(components x n^2)) and compares all pairs with one matrix product. ``measure`` may
    also be any pairwise function, e.g. ``attention_pattern_similarity`` on patterns.
    ``measure`` names a registered measure (``circuitdiff.analysis.measures``), which
    prepares each component once; ``keep_variance`` defaults to 0.99 for SVCCA and 1.0 for PWCCA. ``attrs`` holds the
    measure and the dead components (whose rows/columns are 0).
    """
    if callable(measure) and not isinstance(measure, str):
        if not teacher or not student:
            raise ValueError("no teacher or no student components given")
        rows = [[float(measure(np.asarray(x), np.asarray(y))) for y in student.values()] for x in teacher.values()]
        frame = pd.DataFrame(rows, index=[str(k) for k in teacher], columns=[str(k) for k in student])
        return _with_attrs(frame, getattr(measure, "__name__", "custom"), [], [])
    kind = get_measure(str(getattr(measure, "value", measure)), debiased=debiased, sigma_frac=sigma_frac,
                       keep_variance=keep_variance, max_dims=max_dims)
    t_names, t_mats = _load(teacher, "teacher")
    s_names, s_mats = _load(student, "student")
    n = t_mats[0].shape[0]
    for name, m in zip(t_names + s_names, t_mats + s_mats, strict=True):
        if m.shape[0] != n:
            raise ValueError(f"component {name} has {m.shape[0]} rows, expected {n} (same prompts everywhere)")
    sim = kind.compare_all([kind.prepare(m) for m in t_mats], [kind.prepare(m) for m in s_mats])
    dead_t = [nm for nm, m in zip(t_names, t_mats, strict=True) if is_degenerate(m)]
    dead_s = [nm for nm, m in zip(s_names, s_mats, strict=True) if is_degenerate(m)]
    sim = np.asarray(sim, dtype=np.float64)  # a constant representation compares as 0 under every measure
    sim[[i for i, m in enumerate(t_mats) if is_degenerate(m)], :] = 0.0
    sim[:, [j for j, m in enumerate(s_mats) if is_degenerate(m)]] = 0.0
    if dead_t or dead_s:
        warnings.warn(
            f"similarity_matrix: dead components set to 0: teacher {dead_t}, student {dead_s}",
            DegenerateRepresentationWarning,
            stacklevel=2,
        )
    return _with_attrs(pd.DataFrame(sim, index=t_names, columns=s_names), kind.name, dead_t, dead_s)


def _with_attrs(frame: pd.DataFrame, measure: str, dead_t: list[str], dead_s: list[str]) -> pd.DataFrame:
    frame = frame.rename_axis(index="teacher", columns="student")
    frame.attrs.update({"measure": measure, "dead_teacher": dead_t, "dead_student": dead_s})
    return frame
