"""How concentrated a model's reliance is: few components carrying the task, or many.

Inputs are per-component ablation effects, ablated minus clean metric (signed); the
concentration statistics use |effect|. A drop is -100 effect / clean, in percent of
the clean metric. Percent statistics are None unless the clean mean is clearly positive
(the rule of ``influence.clean_is_meaningful``: mean >= MIN_CLEAN_METRIC and >= 2 standard
errors); the reference code divided by near-zero and negative clean values. All
statistics raise ValueError when every effect is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis.bootstrap import bca_interval, bootstrap_indices, jackknife_weights, resample_weights
from circuitdiff.analysis.influence import MIN_CLEAN_METRIC


def _vector(effects: ArrayLike) -> np.ndarray:
    v = np.asarray(effects, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("effects must be a non-empty vector of finite values")
    if not np.any(v):
        raise ValueError("every effect is 0: concentration is undefined")
    return v


def _shares(rows: np.ndarray) -> np.ndarray:
    """|x| / sum |x| along the last axis; NaN rows where the sum is 0."""
    a = np.abs(rows)
    total = a.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, a / total, np.nan)


def _gini(s: np.ndarray) -> np.ndarray:
    n = s.shape[-1]
    ranks = np.arange(1, n + 1)
    return 2.0 * (np.sort(s, axis=-1) * ranks).sum(axis=-1) / n - (n + 1) / n


def _effective(s: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        plogp = np.where(s > 0, s * np.log(s), 0.0)
    return np.where(np.isnan(s).any(axis=-1), np.nan, np.exp(-plogp.sum(axis=-1)))


def _top_k(s: np.ndarray, k: int) -> np.ndarray:
    return -np.sort(-s, axis=-1)[..., :k].sum(axis=-1)


def _n_for(s: np.ndarray, fraction: float) -> np.ndarray:
    cum = np.cumsum(-np.sort(-s, axis=-1), axis=-1)
    n = (cum < fraction - 1e-12).sum(axis=-1) + 1.0
    return np.where(np.isnan(s).any(axis=-1), np.nan, np.minimum(n, s.shape[-1]))


def gini(effects: ArrayLike) -> float:
    """Gini coefficient of |effects|: 0 when all share equally, (n - 1)/n when one carries all."""
    return float(_gini(_shares(_vector(effects))))


def effective_number(effects: ArrayLike) -> float:
    """exp(entropy of the shares): how many equally important components it is worth (1..n)."""
    return float(_effective(_shares(_vector(effects))))


def top_k_share(effects: ArrayLike, k: int) -> float:
    """Share of total |effect| carried by the k largest components."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(_top_k(_shares(_vector(effects)), k))


def n_for_fraction(effects: ArrayLike, fraction: float = 0.8) -> int:
    """Fewest components whose |effects| add up to at least ``fraction`` of the total."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return int(_n_for(_shares(_vector(effects)), fraction))


def drops_percent(effects: ArrayLike, clean: float, min_clean: float = MIN_CLEAN_METRIC) -> np.ndarray | None:
    """Each component's drop in percent of the clean metric, -100 effect / clean; None if clean < min_clean."""
    if not clean >= min_clean:
        return None
    return -100.0 * np.asarray(effects, dtype=np.float64) / clean


def worst_drop(effects: ArrayLike, clean: float, min_clean: float = MIN_CLEAN_METRIC) -> float | None:
    """Largest single-component drop in percent of the clean metric (None if clean < min_clean)."""
    d = drops_percent(_vector(effects), clean, min_clean)
    return None if d is None else float(d.max())


def severity_tail(drops: ArrayLike, L: float = 100.0, T: float = 20.0, a: float = 1.0) -> float:  # noqa: N803
    """Reference study's tail score: mean_i max(0, (min(L, m_i) - T) / (L - T))^a over drops m_i in %."""
    if not L > T:
        raise ValueError(f"need L > T, got L={L}, T={T}")
    m = np.asarray(drops, dtype=np.float64)
    return float(_severity(m, L, T, a))


def _severity(m: np.ndarray, L: float, T: float, a: float) -> np.ndarray:  # noqa: N803
    return (np.maximum(0.0, (np.minimum(L, m) - T) / (L - T)) ** a).mean(axis=-1)


def _worst_mean(d: np.ndarray, frac: float = 0.05) -> np.ndarray:
    k = max(1, int(np.ceil(frac * d.shape[-1])))
    return -np.sort(-d, axis=-1)[..., :k].mean(axis=-1)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its BCa bootstrap interval over prompts.

    BCa, not the plain percentile interval: these statistics are functions of |mean
    effect|, which resampling noise distorts, so most resamples fall on one side of the
    point; BCa corrects the percentiles for that bias and for skew (jackknife). ``lo`` and
    ``hi`` are NaN when under 2.5% of the resamples lie on one side of the point (see
    ``bootstrap.bca_interval``; an effective number of 44.41 once had the percentile
    interval [44.58, 57.12]).
    """

    point: float
    lo: float
    hi: float
    level: float
    n_valid: int
    """Resamples that gave a finite value (percent statistics drop those with |clean| < min_clean)."""


def concentration_summary(
    effects_per_prompt: ArrayLike,
    clean_per_prompt: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    top_ks: tuple[int, ...] = (1, 5),
    min_clean: float = MIN_CLEAN_METRIC,
) -> dict[str, Interval | None]:
    """Every concentration and drop statistic with a bootstrap interval over prompts.

    ``effects_per_prompt``: (n_components, n_prompts), ablated minus clean metric;
    ``clean_per_prompt``: (n_prompts,). Each resample draws prompt columns with
    replacement, recomputes mean effects and mean clean, then the statistic; the interval
    is BCa (bias from the share of resamples below the point, acceleration from the
    jackknife over prompts). Drop
    statistics (``*_drop``, ``severity_tail`` with L=100, T=20, a=1) are None when the
    clean mean is not clearly positive (< ``min_clean`` or < 2 standard errors);
    resamples whose clean mean falls below ``min_clean`` are left out of their intervals.
    """
    e = np.asarray(effects_per_prompt, dtype=np.float64)
    c = np.asarray(clean_per_prompt, dtype=np.float64).ravel()
    if e.ndim != 2 or e.shape[1] != c.size:
        raise ValueError(f"effects must be (n_components, n_prompts={c.size}), got {e.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(c))):
        raise ValueError("effects and clean metric must be finite")
    _vector(e.mean(axis=1))  # raises if no component has any mean effect
    boot = resample_weights(bootstrap_indices(c.size, n_boot, seed), c.size)
    weights = np.vstack([np.full(c.size, 1.0 / c.size), boot, jackknife_weights(c.size)])
    means, cleans = weights @ e.T, weights @ c  # row 0: the point estimate; the last c.size rows: jackknife
    shares = _shares(means)
    stats: dict[str, np.ndarray] = {"gini": _gini(shares), "effective_number": _effective(shares)}
    stats.update({f"top_{k}_share": _top_k(shares, k) for k in top_ks})
    stats.update({"n_for_0.8": _n_for(shares, 0.8), "n_for_0.9": _n_for(shares, 0.9)})
    valid = cleans >= min_clean  # a negative clean metric reverses every drop's sign: no percentages of it
    with np.errstate(invalid="ignore", divide="ignore"):
        drops = np.where(valid[:, None], -100.0 * means / np.where(valid, cleans, 1.0)[:, None], np.nan)
    percent = {
        "worst_drop": drops.max(axis=1),
        "mean_drop": drops.mean(axis=1),
        "median_drop": np.median(drops, axis=1),
        "worst5_mean_drop": _worst_mean(drops),
        "severity_tail": _severity(drops, 100.0, 20.0, 1.0),
    }
    out: dict[str, Interval | None] = {name: _interval(v, n_boot, level) for name, v in stats.items()}
    se = float(c.std(ddof=1)) / np.sqrt(c.size) if c.size > 1 else np.inf
    meaningful = bool(valid[0]) and cleans[0] >= 2.0 * se
    for name, v in percent.items():
        out[name] = _interval(v, n_boot, level) if meaningful else None
    return out


def _interval(values: np.ndarray, n_boot: int, level: float) -> Interval:
    """values: [point, n_boot resamples, jackknife values]."""
    boot, jack = values[1 : 1 + n_boot], values[1 + n_boot :]
    lo, hi = bca_interval(float(values[0]), boot, jack, level)
    return Interval(float(values[0]), lo, hi, level, int(np.isfinite(boot).sum()))
