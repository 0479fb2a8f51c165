"""How well a cheap estimate (attribution, EAP, EAP-IG) agrees with the exact effects, where it matters.

Why three figures: a Spearman rank correlation over every component or edge is dominated by the
many items with near-zero effect, whose order is noise for the exact method and the estimate alike.
On the shipped teacher's ``ioi`` edges it ranks EAP above EAP-IG, while on the edges that carry the
behaviour EAP-IG is far closer. So beside the overall figure we give the rank correlation over the
``top_k`` items with the largest exact |effect| (does the estimate order the items that matter?) and
the Pearson correlation weighted by exact |effect| (do the estimates of the large items move with
their exact values?). Each is None where it is undefined (fewer than 3 items, or a constant input).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import spearmanr

from circuitdiff.schema import Agreement

TOP_K_COMPONENTS = 10
"""Top components by exact |effect| for the node figure (a third of the shipped teacher's 30)."""
TOP_K_EDGES = 30
"""Top edges by exact |effect| for the edge figure."""


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: undefined, reported as None
        return _finite(spearmanr(x, y).statistic)


def weighted_correlation(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float | None:
    """Pearson correlation of x and y with each pair weighted (None where a weighted variance is 0)."""
    w = weights / weights.sum() if weights.sum() > 0 else None
    if w is None or len(x) < 3:
        return None
    dx, dy = x - w @ x, y - w @ y
    var_x, var_y = w @ (dx * dx), w @ (dy * dy)
    if var_x <= 0 or var_y <= 0:
        return None
    return _finite(float(np.clip(w @ (dx * dy) / np.sqrt(var_x * var_y), -1.0, 1.0)))


def agreement(exact: np.ndarray, estimate: np.ndarray, top_k: int) -> Agreement:
    """The estimate against the exact effects: overall Spearman, Spearman on the top-k by exact |effect|,
    and the |exact|-weighted Pearson correlation."""
    exact = np.asarray(exact, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    k = min(top_k, len(exact))
    top = np.argsort(-np.abs(exact), kind="stable")[:k]
    return Agreement(n=len(exact), spearman=_spearman(exact, estimate), top_k=k,
                     top_k_spearman=_spearman(exact[top], estimate[top]),
                     weighted_correlation=weighted_correlation(exact, estimate, np.abs(exact)))
