"""Linear CKA with debiased HSIC: the default; reliable at small n, rotation and scale invariant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from circuitdiff.analysis._arrays import Float64Array, is_degenerate
from circuitdiff.analysis.cka import centre_gram, linear_gram, rbf_gram, weighted_cka_matrix, zero_diagonal_gram
from circuitdiff.analysis.measures import register


def gram_feature(x: Float64Array, rbf: bool, debiased: bool, sigma_frac: float) -> Float64Array:
    """The unit-norm, flattened centred Gram matrix (zeros for a constant representation)."""
    n = x.shape[0]
    if is_degenerate(x):
        return np.zeros(n * n)
    g = centre_gram(rbf_gram(x, sigma_frac) if rbf else linear_gram(x), debiased).ravel()
    norm = float(np.linalg.norm(g))
    return g / norm if norm > 0.0 else np.zeros(n * n)


@register
@dataclass(frozen=True)
class LinearCKA:
    name: ClassVar[str] = "linear_cka"
    description: ClassVar[str] = __doc__.splitlines()[0]
    prompt_weights: ClassVar[bool] = True
    """Resamples reuse each component's zero-diagonal Gram matrix (``cka.weighted_cka_matrix``)."""
    debiased: bool = True

    def prepare(self, x: Float64Array) -> Float64Array:
        return gram_feature(x, False, self.debiased, 0.8)

    def compare_all(self, teacher: Sequence[Float64Array], student: Sequence[Float64Array]) -> Float64Array:
        """All pairs in one matrix product of the unit-norm features."""
        return np.clip(np.stack(teacher) @ np.stack(student).T, -1.0, 1.0)

    def prepare_weighted(self, x: Float64Array) -> Float64Array:
        """The zero-diagonal unit-norm Gram matrix (zeros for a constant representation)."""
        return np.zeros((len(x), len(x))) if is_degenerate(x) else zero_diagonal_gram(x)

    def compare_weighted(self, teacher: Float64Array, student: Float64Array, weights: Float64Array) -> Float64Array:
        """Weighted debiased CKA (all-ones weights: this measure's ``compare_all``, debiased)."""
        return weighted_cka_matrix(teacher, student, weights)
