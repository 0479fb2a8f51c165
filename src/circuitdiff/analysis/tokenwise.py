"""Token-wise cosine of two MLPs' outputs: how alike they write at each position of the same prompts.

Needs both models to share a tokenisation (same positions); the residual widths must match.
Per prompt, the mean cosine over its real positions; intervals resample prompts.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import Float64Array


def tokenwise_cosine(x: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> Float64Array:
    """(n,) mean over real positions of cos(x[i, p], y[i, p]); x, y (n, s, d), mask (n, s) 1 = real token."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"token-wise cosine needs two (n, s, d) arrays of one shape, got {a.shape} and {b.shape}")
    m = np.ones(a.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, (a * b).sum(axis=-1) / den, np.nan)
    m = m * np.isfinite(cos)
    counts = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(cos * m, axis=1) / counts, np.nan)
