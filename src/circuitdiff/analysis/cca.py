"""SVCCA (Raghu et al. 2017) and PWCCA (Morcos et al. 2018).

Both reduce to canonical correlations between two subspaces of prompt space: CCA is
invariant to any invertible linear map of either side, so only the span of the (centred,
optionally SVD-truncated) columns matters. With orthonormal bases Qx, Qy of those spans
the canonical correlations are the singular values of Qx^T Qy.

Small-sample caveat: with n prompts the centred columns live in n - 1 dimensions; if the
two subspaces keep kx + ky > n - 1 directions, at least kx + ky - (n - 1) correlations are
1 whatever the data (``SmallSampleWarning``), and values are inflated well before that.
At n = 64 with 768-wide MLP outputs, prefer CKA or cap the directions with ``max_dims``.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import (
    Float64Array,
    SmallSampleWarning,
    as_matrix,
    centre,
    is_degenerate,
    same_rows,
    warn_degenerate,
)


def subspace_basis(x: Float64Array, keep_variance: float = 0.99, max_dims: int | None = None) -> Float64Array:
    """Orthonormal (n, k) basis of the top principal directions of the centred ``x``.

    k is the smallest number of directions explaining ``keep_variance`` of the variance
    (numerically null directions are always dropped), capped at ``max_dims``.
    """
    if not 0.0 < keep_variance <= 1.0:
        raise ValueError(f"keep_variance must be in (0, 1], got {keep_variance}")
    xc = centre(x)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0]
    rank = int(np.sum(s > s[0] * max(xc.shape) * np.finfo(np.float64).eps))
    var = s[:rank] ** 2
    frac = np.cumsum(var) / var.sum()
    k = min(int(np.searchsorted(frac, keep_variance - 1e-12)) + 1, rank)
    if max_dims is not None:
        if max_dims < 1:
            raise ValueError(f"max_dims must be >= 1, got {max_dims}")
        k = min(k, max_dims)
    return u[:, :k]


def check_sample_size(kx: int, ky: int, n: int, what: str) -> None:
    """Warn when the subspaces are too wide for n prompts to tell them apart."""
    if kx + ky > n - 1:
        warnings.warn(
            f"{what}: {kx} + {ky} directions in {n - 1} centred dimensions force at least "
            f"{kx + ky - (n - 1)} canonical correlations to 1; use more prompts, max_dims, or CKA",
            SmallSampleWarning,
            stacklevel=3,
        )


def canonical_correlations(qx: Float64Array, qy: Float64Array) -> Float64Array:
    """Canonical correlations (descending) of two orthonormal bases of prompt space."""
    s = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return np.clip(s, 0.0, 1.0)


def svcca(x: ArrayLike, y: ArrayLike, keep_variance: float = 0.99, max_dims: int | None = None) -> float:
    """SVCCA: mean canonical correlation after keeping ``keep_variance`` of each side's variance.

    1 when Y is an invertible linear map of X (and the truncation keeps the same span);
    dead input gives 0.0.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("svcca")
        return 0.0
    qx = subspace_basis(xm, keep_variance, max_dims)
    qy = subspace_basis(ym, keep_variance, max_dims)
    check_sample_size(qx.shape[1], qy.shape[1], xm.shape[0], "svcca")
    return float(np.mean(canonical_correlations(qx, qy)))


def pwcca_from_bases(qx: Float64Array, qy: Float64Array, xc: Float64Array, yc: Float64Array) -> float:
    """PWCCA given the subspace bases and the centred neurons of each side.

    As in Morcos et al.'s code, the weights come from the side with fewer directions:
    weight_i = sum over that side's neurons j of |<h_i, z_j>|, h_i its orthonormal
    canonical variates, then normalised to sum 1. That choice makes it symmetric.
    """
    u, s, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    s = np.clip(s, 0.0, 1.0)
    k = s.size
    if qx.shape[1] <= qy.shape[1]:
        h, z = qx @ u[:, :k], xc
    else:
        h, z = qy @ vt.T[:, :k], yc
    weights = np.abs(h.T @ z).sum(axis=1)
    total = weights.sum()
    if total <= 0.0:
        return 0.0
    return float((weights / total) @ s)


def pwcca(x: ArrayLike, y: ArrayLike, keep_variance: float = 1.0, max_dims: int | None = None) -> float:
    """PWCCA: canonical correlations weighted by how much of the neurons each direction explains.

    By default no variance truncation (as in Morcos et al.), only numerically null
    directions are dropped. 1 for an invertible linear map; dead input gives 0.0.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("pwcca")
        return 0.0
    qx = subspace_basis(xm, keep_variance, max_dims)
    qy = subspace_basis(ym, keep_variance, max_dims)
    check_sample_size(qx.shape[1], qy.shape[1], xm.shape[0], "pwcca")
    return pwcca_from_bases(qx, qy, centre(xm), centre(ym))
