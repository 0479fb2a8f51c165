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


# --- weighted debiased CKA: the bootstrap's estimator ------------------------------------
#
# A bootstrap resample repeats some prompts. Fed to the debiased estimator as rows, a
# repeated prompt pairs with its own copy, which is the diagonal term debiasing removes:
# CKA of unrelated representations is pushed up (on the shipped teacher against a random
# student, every resample scored above the point). Dropping the repeats instead (the old
# approach) estimates similarity from ~63% of the prompts. The weighted estimator keeps
# every draw as a weight and never pairs a prompt with itself: Song et al.'s unbiased HSIC
# is the average of the kernel h(i, j, q, r) = mean over orderings (t, u, v, s) of
# K_tu L_tu + K_tu L_vs - 2 K_tu L_tv over 4-tuples of distinct prompts; here each tuple
# is weighted by w_i w_j w_q w_r. With all weights 1 this is Song's estimator exactly; a
# weight 0 leaves a prompt out (the jackknife); like the unweighted one it ignores how the
# representation was centred. Sums over distinct tuples reduce to a few matrix products by
# inclusion-exclusion (the test checks them against the sum written out).


def zero_diagonal_gram(x: Float64Array) -> Float64Array:
    """Linear Gram matrix of the column-centred ``x`` with a zero diagonal, scaled to unit norm.

    Centring and scale do not change (weighted) debiased CKA; they only keep float64 well
    conditioned. A dead (constant) input gives zeros.
    """
    g = linear_gram(x)
    np.fill_diagonal(g, 0.0)
    norm = float(np.linalg.norm(g))
    return g / norm if norm > 0.0 else g


def _weights(w: ArrayLike) -> Float64Array:
    wv = np.asarray(w, dtype=np.float64).ravel()
    if np.any(wv < 0) or np.count_nonzero(wv) < 4:
        raise ValueError("weighted debiased HSIC needs non-negative weights on at least 4 prompts")
    return wv


def _tuple_mass(w: Float64Array) -> float:
    """Sum of w_i w_j w_q w_r over ordered 4-tuples of distinct indices (from power sums)."""
    p1, p2, p3, p4 = (float(np.sum(w**k)) for k in (1, 2, 3, 4))
    return p1**4 - 6 * p1**2 * p2 + 3 * p2**2 + 8 * p1 * p3 - 6 * p4


def _hsic_parts(w: Float64Array) -> tuple[Float64Array, Float64Array]:
    """(M, v): HSIC_w(K, L) D4 = <M o K, L> + sum_i (Kw)_i (Lw)_i v_i + 2 w.(Kw o Lw2 + Kw2 o Lw) + (w'Kw)(w'Lw)."""
    total, sq = float(w.sum()), float(np.sum(w**2))
    m = np.outer(w, w) * ((total**2 - sq) - total * (w[:, None] + w[None, :]) + 2.0 * np.outer(w, w))
    return m, -2.0 * total * w - 2.0 * w**2


def weighted_hsic(k: Float64Array, l: Float64Array, w: ArrayLike) -> float:  # noqa: E741
    """Weighted debiased HSIC of two zero-diagonal kernel matrices (see the comment above)."""
    wv = _weights(w)
    cross, _, _ = _weighted_terms(k[None], l[None], wv)
    return float(cross[0, 0]) / _tuple_mass(wv)


def _weighted_terms(
    kt: Float64Array, ks: Float64Array, w: Float64Array
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """D4 x weighted HSIC of every pair (Ct, Cs), and of each kernel with itself (Ct,), (Cs,).

    HSIC_w(K, L) D4 = <M o K, L> + sum_i v_i (Kw)_i (Lw)_i + 2 w.(Kw o Lw2 + Kw2 o Lw) + (w'Kw)(w'Lw),
    with w2 = w o w and (M, v) from ``_hsic_parts``.
    """
    m, v = _hsic_parts(w)
    w2 = w**2
    flat_t, flat_s = kt.reshape(len(kt), -1), ks.reshape(len(ks), -1)
    mt, ms = flat_t * m.ravel(), flat_s * m.ravel()
    (at, bt), (as_, bs) = (kt @ w, kt @ w2), (ks @ w, ks @ w2)

    def vector_terms(a: Float64Array, b: Float64Array, a2: Float64Array, b2: Float64Array) -> Float64Array:
        return (a * v) @ b.T + 2.0 * ((a * w) @ b2.T + (a2 * w) @ b.T) + np.outer(a @ w, b @ w)

    cross = mt @ flat_s.T + vector_terms(at, as_, bt, bs)
    self_t = np.einsum("ij,ij->i", mt, flat_t) + (at * at) @ v + 4.0 * (at * w * bt).sum(1) + (at @ w) ** 2
    self_s = np.einsum("ij,ij->i", ms, flat_s) + (as_ * as_) @ v + 4.0 * (as_ * w * bs).sum(1) + (as_ @ w) ** 2
    return cross, self_t, self_s


def weighted_cka_matrix(kt: Float64Array, ks: Float64Array, w: ArrayLike) -> Float64Array:
    """Weighted debiased CKA of every pair from two stacks of zero-diagonal Grams, (Ct, n, n) x (Cs, n, n).

    One matrix product per call, so a bootstrap costs one product per resample instead of
    recomputing every component's Gram matrix. All-ones weights give ``linear_cka``; a
    component whose weighted self-HSIC is not positive (dead on these prompts) gets 0.
    """
    cross, self_t, self_s = _weighted_terms(kt, ks, _weights(w))
    scale = np.sqrt(np.outer(np.maximum(self_t, 0.0), np.maximum(self_s, 0.0)))
    out = np.divide(cross, scale, out=np.zeros_like(cross), where=scale > 0.0)
    return np.clip(out, -1.0, 1.0)
