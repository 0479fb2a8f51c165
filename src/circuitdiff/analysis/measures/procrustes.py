"""Orthogonal Procrustes fit of normalised representations: stricter than CKA (no reweighting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from circuitdiff.analysis._arrays import Float64Array, is_degenerate
from circuitdiff.analysis.measures import register
from circuitdiff.analysis.measures.svcca import stack
from circuitdiff.analysis.pairwise import procrustes_scores


@register
@dataclass(frozen=True)
class Procrustes:
    name: ClassVar[str] = "procrustes"
    description: ClassVar[str] = __doc__.splitlines()[0]

    def prepare(self, x: Float64Array) -> Float64Array:
        return np.zeros((x.shape[0], 0)) if is_degenerate(x) else procrustes_scores(x)

    def compare_all(self, teacher: Sequence[Float64Array], student: Sequence[Float64Array]) -> Float64Array:
        n = teacher[0].shape[0]
        at, as_ = stack(teacher, n), stack(student, n)
        sim = np.empty((len(teacher), len(student)))
        for i in range(len(teacher)):
            sim[i] = np.linalg.svd(np.matmul(at[i].T, as_), compute_uv=False).sum(axis=1)
        return np.clip(sim, 0.0, 1.0)
