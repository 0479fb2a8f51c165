"""Percentile bootstrap over items (prompts), seeded, vectorised where the statistic allows.

Resampling prompts, not components, is what the intervals are about: how much a
number would move with a different draw of prompts from the same task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_indices(n_items: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_items) item indices drawn with replacement from a seeded generator."""
    if n_items < 1 or n_boot < 1:
        raise ValueError(f"need n_items >= 1 and n_boot >= 1, got {n_items}, {n_boot}")
    return np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))


def resample_weights(indices: np.ndarray, n_items: int) -> np.ndarray:
    """(n_boot, n_items) weights summing to 1 per resample, so means become one matrix product."""
    counts = np.zeros((indices.shape[0], n_items))
    np.add.at(counts, (np.arange(indices.shape[0])[:, None], indices), 1.0)
    return counts / indices.shape[1]


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed percentile interval of the finite bootstrap values (NaN if none are)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray], float | np.ndarray],
    n_items: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    vectorized: bool = False,
) -> tuple[float, float, float]:
    """(point, lo, hi): ``stat_fn`` on all items, and its percentile interval over resamples.

    ``stat_fn`` receives an index array into the items: shape (n_items,) per call, or
    with ``vectorized=True`` all resamples at once, shape (n_boot, n_items), returning
    (n_boot,) values. Resamples giving NaN are left out of the interval.
    """
    point = float(np.asarray(stat_fn(np.arange(n_items)[None, :] if vectorized else np.arange(n_items))).ravel()[0])
    idx = bootstrap_indices(n_items, n_boot, seed)
    if vectorized:
        values = np.asarray(stat_fn(idx), dtype=np.float64).ravel()
    else:
        values = np.array([float(stat_fn(row)) for row in idx])
    lo, hi = percentile_interval(values, level)
    return point, lo, hi
