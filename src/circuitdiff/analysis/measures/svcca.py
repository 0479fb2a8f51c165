"""Mean canonical correlation after keeping 99% of variance: needs n well above the kept dims."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from circuitdiff.analysis._arrays import Float64Array, centre, is_degenerate
from circuitdiff.analysis.cca import check_sample_size, subspace_basis
from circuitdiff.analysis.measures import register

Prepared = tuple[Float64Array, Float64Array]
"""(orthonormal basis of the kept subspace (n, k), centred activations); k = 0 for a constant one."""


def stack(blocks: Sequence[Float64Array], n: int) -> Float64Array:
    """(C, n, r_max) stack, narrower blocks zero-padded (zero columns add only zero singular values)."""
    r = max([b.shape[1] for b in blocks] + [1])
    out = np.zeros((len(blocks), n, r))
    for i, b in enumerate(blocks):
        out[i, :, : b.shape[1]] = b
    return out


@register
@dataclass(frozen=True)
class SVCCA:
    name: ClassVar[str] = "svcca"
    description: ClassVar[str] = __doc__.splitlines()[0]
    keep_variance: float = 0.99
    max_dims: int | None = None

    def prepare(self, x: Float64Array) -> Prepared:
        basis = np.zeros((x.shape[0], 0)) if is_degenerate(x) else subspace_basis(x, self.keep_variance, self.max_dims)
        return basis, centre(x)

    def compare_all(self, teacher: Sequence[Prepared], student: Sequence[Prepared]) -> Float64Array:
        n = teacher[0][0].shape[0]
        kt = np.array([b.shape[1] for b, _ in teacher])
        ks = np.array([b.shape[1] for b, _ in student])
        check_sample_size(int(kt.max()), int(ks.max()), n, "similarity_matrix")
        return self._block(teacher, student, kt, ks, n)

    def _block(self, teacher: Sequence[Prepared], student: Sequence[Prepared], kt: np.ndarray, ks: np.ndarray,
               n: int) -> Float64Array:
        qs = stack([b for b, _ in student], n)
        sim = np.zeros((len(teacher), len(student)))
        for i, (qx, _) in enumerate(teacher):
            if kt[i] == 0:
                continue
            s = np.clip(np.linalg.svd(np.matmul(qx.T, qs), compute_uv=False), 0.0, 1.0)
            m = np.minimum(kt[i], ks)
            sim[i] = np.where(m > 0, (s * (np.arange(s.shape[1]) < m[:, None])).sum(axis=1) / np.maximum(m, 1), 0.0)
        return sim
