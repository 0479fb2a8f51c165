"""Centred kernel alignment (CKA), debiased by default, accumulated in float64.

Why debiased: the plain (biased) HSIC estimator reads well above 0 on independent data
when the number of prompts n is small next to the width d (about 0.2 at n = 32, and more
for wide layers). The unbiased HSIC of Song et al. (2012), used by Kornblith et al.
(2019), removes that floor. With it, CKA can come out slightly negative on unrelated
data; we return the value as is (no clipping), so that averages stay unbiased. Callers
that need [0, 1] (the alignment score) clip themselves.

Implementation: every kernel matrix is "U-centred" once (Szekely & Rizzo 2014); the
unbiased HSIC of two kernels is then the plain inner product of their U-centred matrices
divided by n(n - 3). ``similarity_matrix`` uses this to compare many components with
one matrix product.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import (
    Float64Array,
    as_matrix,
    centre,
    is_degenerate,
    same_rows,
    warn_degenerate,
)


def linear_gram(x: Float64Array) -> Float64Array:
    """Gram matrix of the column-centred representation (centring first keeps float64 exact)."""
    xc = centre(x)
    return xc @ xc.T


def rbf_gram(x: Float64Array, sigma_frac: float = 0.8) -> Float64Array:
    """Gaussian kernel with bandwidth ``sigma_frac`` x the median pairwise distance.

    The median is taken over distinct pairs (i < j); if more than half the pairs coincide
    it falls back to the mean of the non-zero distances so that the bandwidth stays > 0.
    """
    if sigma_frac <= 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}")
    g = linear_gram(x)
    d = np.diag(g)
    sq = np.maximum(d[:, None] + d[None, :] - 2.0 * g, 0.0)
    dist = np.sqrt(sq[np.triu_indices_from(sq, k=1)])
    med = float(np.median(dist)) if dist.size else 0.0
    if med == 0.0:
        positive = dist[dist > 0]
        med = float(positive.mean()) if positive.size else 1.0
    sigma = sigma_frac * med
    return np.exp(-sq / (2.0 * sigma * sigma))


def centre_gram(k: Float64Array, debiased: bool = True) -> Float64Array:
    """U-centre (debiased) or double-centre (biased) a kernel matrix, returning a new matrix.

    U-centring zeroes the diagonal and removes row/column effects with the n - 2 and
    (n - 1)(n - 2) denominators of the unbiased estimator, so that
    <U(K), U(L)> / (n (n - 3)) is Song et al.'s unbiased HSIC.
    """
    n = k.shape[0]
    if k.shape != (n, n):
        raise ValueError(f"kernel matrix must be square, got {k.shape}")
    g = np.array(k, dtype=np.float64, copy=True)
    if debiased:
        if n < 4:
            raise ValueError(f"debiased HSIC needs at least 4 prompts, got n = {n}")
        np.fill_diagonal(g, 0.0)
        means = g.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0.0)
    else:
        g -= g.mean(axis=0, keepdims=True)
        g -= g.mean(axis=1, keepdims=True)
    return g


def hsic(kx: Float64Array, ky: Float64Array, debiased: bool = True) -> float:
    """HSIC of two kernel matrices: unbiased (Song 2012) or biased tr(KHLH) / (n - 1)^2."""
    n = int(kx.shape[0])
    inner = float(np.vdot(centre_gram(kx, debiased), centre_gram(ky, debiased)))
    return inner / (n * (n - 3)) if debiased else inner / (n - 1) ** 2


def cka_from_centred(kc: Float64Array, lc: Float64Array) -> float:
    """CKA of two already centred kernel matrices (clipped to [-1, 1] against rounding); 0.0 if either is flat."""
    kk = float(np.vdot(kc, kc))
    ll = float(np.vdot(lc, lc))
    if kk <= 0.0 or ll <= 0.0:
        return 0.0
    return float(np.clip(np.vdot(kc, lc) / np.sqrt(kk * ll), -1.0, 1.0))


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = True) -> float:
    """Linear CKA between X (n, d1) and Y (n, d2); rows are the same prompts.

    Invariant to orthogonal transforms and isotropic scaling of either side. Debiased
    values may be slightly negative and are returned unclipped; a dead input gives 0.0.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("linear_cka")
        return 0.0
    return cka_from_centred(centre_gram(linear_gram(xm), debiased), centre_gram(linear_gram(ym), debiased))


def rbf_cka(x: ArrayLike, y: ArrayLike, sigma_frac: float = 0.8, debiased: bool = True) -> float:
    """CKA with Gaussian kernels (bandwidth = ``sigma_frac`` x median distance, per side).

    Picks up non-linear agreement that linear CKA misses; same conventions otherwise.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("rbf_cka")
        return 0.0
    return cka_from_centred(
        centre_gram(rbf_gram(xm, sigma_frac), debiased), centre_gram(rbf_gram(ym, sigma_frac), debiased)
    )
