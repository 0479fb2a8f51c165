"""Split-half SVCCA and PWCCA: canonical directions fitted on one half of the prompts, scored on the other.

In-sample CCA finds the best linear match in the very prompts it scores, so with k kept
directions per side and n prompts it reads high even on independent data (k + k > n - 1
forces correlations to 1). Fitting the truncation and the canonical weights on one half
and correlating the projected held-out half cannot overfit: on independent data the
held-out correlations scatter around 0, for related data they stay high.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import Float64Array, as_matrix, same_rows


@dataclass(frozen=True)
class CCAFit:
    """Linear maps from centred activations to canonical variates, fitted on one half."""

    mean_x: Float64Array
    mean_y: Float64Array
    weights_x: Float64Array  # (d_x, m)
    weights_y: Float64Array  # (d_y, m)
    pwcca_weights: Float64Array  # (m,) sums to 1


def _reduce(xc: Float64Array, keep_variance: float, max_dims: int | None) -> Float64Array:
    """(d, k) right singular vectors keeping ``keep_variance`` of the variance (no null directions)."""
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return vt[:0].T
    rank = int(np.sum(s > s[0] * max(xc.shape) * np.finfo(np.float64).eps))
    frac = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
    k = min(int(np.searchsorted(frac, keep_variance - 1e-12)) + 1, rank)
    if max_dims is not None:
        k = min(k, max_dims)
    return vt[:k].T / s[:k]  # whitening: columns of xc @ this are orthonormal


def fit_cca(x: ArrayLike, y: ArrayLike, keep_variance: float = 0.99, max_dims: int | None = None) -> CCAFit:
    """Fit SVD truncation + CCA on (x, y) rows; weights map centred rows to canonical variates."""
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    mx, my = xm.mean(axis=0), ym.mean(axis=0)
    px = _reduce(xm - mx, keep_variance, max_dims)
    py = _reduce(ym - my, keep_variance, max_dims)
    qx, qy = (xm - mx) @ px, (ym - my) @ py
    u, s, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    wx, wy = px @ u, py @ vt.T
    m = s.size
    # PWCCA weights (Morcos et al.): share of the smaller side's neurons each variate explains.
    if px.shape[1] <= py.shape[1]:
        raw = np.abs(((xm - mx) @ wx).T @ (xm - mx)).sum(axis=1)
    else:
        raw = np.abs(((ym - my) @ wy).T @ (ym - my)).sum(axis=1)
    pw = raw / raw.sum() if raw.sum() > 0 else np.full(m, 1.0 / max(m, 1))
    return CCAFit(mx, my, wx[:, :m], wy[:, :m], pw)


def heldout_correlations(fit: CCAFit, x: ArrayLike, y: ArrayLike) -> Float64Array:
    """Pearson correlation of each fitted canonical pair on new rows (NaN where a variate is constant)."""
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    zx = (xm - fit.mean_x) @ fit.weights_x
    zy = (ym - fit.mean_y) @ fit.weights_y
    zx, zy = zx - zx.mean(axis=0), zy - zy.mean(axis=0)
    den = np.sqrt((zx**2).sum(axis=0) * (zy**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (zx * zy).sum(axis=0) / den, np.nan)


def split_half(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of n prompts into two halves (fit, score)."""
    if n < 4:
        raise ValueError(f"split-half CCA needs at least 4 prompts, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def heldout_svcca_pwcca(x: ArrayLike, y: ArrayLike, seed: int = 0, keep_variance: float = 0.99,
                        max_dims: int | None = None) -> tuple[float, float]:
    """(SVCCA, PWCCA) fitted on one half and scored on the other, averaged over both directions of the split."""
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    a, b = split_half(xm.shape[0], seed)
    sv, pw = [], []
    for fit_rows, score_rows in ((a, b), (b, a)):
        fit = fit_cca(xm[fit_rows], ym[fit_rows], keep_variance, max_dims)
        r = heldout_correlations(fit, xm[score_rows], ym[score_rows])
        ok = np.isfinite(r)
        sv.append(float(r[ok].mean()) if ok.any() else 0.0)
        pw.append(float(fit.pwcca_weights[ok] @ r[ok] / fit.pwcca_weights[ok].sum()) if ok.any() else 0.0)
    return float(np.mean(sv)), float(np.mean(pw))
