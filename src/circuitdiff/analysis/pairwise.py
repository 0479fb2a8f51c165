"""Procrustes, attention-pattern, principal-direction and functional similarity of two components.

The last three are what the reference study used (and ``functional_similarity`` is what
Circuit Distillation pairs heads by); they are here so circuitdiff can redo its numbers.
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
from circuitdiff.errors import NumericalError


def procrustes_scores(x: Float64Array) -> Float64Array:
    """(n, r) principal scores of the centred, Frobenius-normalised ``x``.

    ||X^T Y||_* equals ||A_x^T A_y||_* for these scores, so pairs cost an n x n SVD
    whatever the widths, and zero-padding the narrower side is implicit.
    """
    xc = centre(x)
    norm = float(np.linalg.norm(xc))
    u, s, _ = np.linalg.svd(xc / norm, full_matrices=False)
    return u * s


def procrustes_similarity(x: ArrayLike, y: ArrayLike) -> float:
    """1 - (orthogonal Procrustes distance)^2 / 2, in [0, 1].

    After centring and scaling each side to unit Frobenius norm (zero-padding the
    narrower one), min_R ||X R - Y||_F^2 = 2 - 2 ||X^T Y||_*; we return ||X^T Y||_*.
    1 iff Y is a rotation/reflection of X up to shift and scale; dead input gives 0.0.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("procrustes_similarity")
        return 0.0
    ax, ay = procrustes_scores(xm), procrustes_scores(ym)
    return float(np.clip(np.linalg.svd(ax.T @ ay, compute_uv=False).sum(), 0.0, 1.0))


def _mean_pattern(a: ArrayLike, name: str) -> Float64Array:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=0)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (batch, query_pos, key_pos) or (query_pos, key_pos), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NumericalError(f"{name} contains NaN or infinite values")
    return arr


def attention_pattern_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine of two heads' batch-averaged attention patterns (the reference study's head S).

    ``a``, ``b``: one head's attention probabilities, shape (batch, query_pos, key_pos),
    or already averaged (query_pos, key_pos); both must share the same positions (same
    prompts, same tokenisation). Caveat: patterns are non-negative and share the causal
    mask, so unrelated heads still score well above 0. A zero pattern gives 0.0.
    """
    pa, pb = _mean_pattern(a, "A"), _mean_pattern(b, "B")
    if pa.shape != pb.shape:
        raise ValueError(f"attention patterns must have the same shape after averaging: {pa.shape} != {pb.shape}")
    na, nb = float(np.linalg.norm(pa)), float(np.linalg.norm(pb))
    if na == 0.0 or nb == 0.0:
        warn_degenerate("attention_pattern_similarity")
        return 0.0
    return float(np.vdot(pa, pb)) / (na * nb)


def principal_direction_similarity(x: ArrayLike, y: ArrayLike, k: int = 3) -> float:
    """Mean |cosine| between the i-th principal directions of X and Y, i < k (reference MLP S).

    Only meaningful when both outputs live in the same basis (same d, e.g. a student
    seeded from the teacher's residual stream); sign-invariant. Dead input gives 0.0.
    """
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(f"principal directions need the same width: {xm.shape[1]} != {ym.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if is_degenerate(xm) or is_degenerate(ym):
        warn_degenerate("principal_direction_similarity")
        return 0.0
    vx = np.linalg.svd(centre(xm), full_matrices=False)[2]
    vy = np.linalg.svd(centre(ym), full_matrices=False)[2]
    m = min(k, vx.shape[0], vy.shape[0])
    return float(np.mean(np.abs(np.sum(vx[:m] * vy[:m], axis=1))))


def functional_similarity(e1: ArrayLike, e2: ArrayLike) -> float:
    """Pearson correlation of two components' per-prompt ablation effects (length-n vectors).

    Components that hurt the same prompts play the same role, whatever their activations
    look like. In [-1, 1]; a component with a constant effect gives 0.0.
    """
    a, b = as_matrix(e1, "e1"), as_matrix(e2, "e2")
    if a.shape[1] != 1 or b.shape[1] != 1:
        raise ValueError(f"effects must be vectors, got shapes {a.shape} and {b.shape}")
    a, b = a[:, 0], b[:, 0]
    if a.shape != b.shape:
        raise ValueError(f"effect vectors must have the same length: {a.size} != {b.size}")
    if is_degenerate(a) or is_degenerate(b):
        warn_degenerate("functional_similarity")
        return 0.0
    ac, bc = a - a.mean(), b - b.mean()
    return float(np.clip(ac @ bc / np.sqrt((ac @ ac) * (bc @ bc)), -1.0, 1.0))
