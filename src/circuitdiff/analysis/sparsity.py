"""MLP activation sparsity: share of near-zero hidden units and the Hoyer measure, per prompt.

Threshold: a hidden unit counts as near zero when |h| <= ``NEAR_ZERO`` (0.01) in absolute
value; GELU's negative lobe never reaches exactly 0, so an exact-zero count would read 0
for GPT-style MLPs. Hoyer (2004): (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1), 0 for a
constant-magnitude vector, 1 for a one-hot one; scale-free, so it needs no threshold.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import Float64Array

NEAR_ZERO = 0.01


def near_zero_fraction(h: ArrayLike, threshold: float = NEAR_ZERO) -> Float64Array:
    """(...,) fraction of units (last axis) with |h| <= threshold."""
    a = np.asarray(h, dtype=np.float64)
    return (np.abs(a) <= threshold).mean(axis=-1)


def hoyer(h: ArrayLike) -> Float64Array:
    """(...,) Hoyer sparsity over the last axis; NaN for an all-zero vector (sparsity undefined)."""
    a = np.abs(np.asarray(h, dtype=np.float64))
    d = a.shape[-1]
    if d < 2:
        raise ValueError(f"Hoyer sparsity needs at least 2 units, got {d}")
    l1, l2 = a.sum(axis=-1), np.sqrt((a**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(l2 > 0, l1 / l2, np.nan)
    return (np.sqrt(d) - ratio) / (np.sqrt(d) - 1.0)
