"""Concentration statistics on hand examples, and bootstrap intervals over prompts."""

from __future__ import annotations

import numpy as np
import pytest

from circuitdiff.analysis.bootstrap import bootstrap_ci
from circuitdiff.analysis.concentration import (
    concentration_summary,
    drops_percent,
    effective_number,
    gini,
    n_for_fraction,
    severity_tail,
    top_k_share,
    worst_drop,
)


@pytest.mark.parametrize("n", [2, 5, 144])
def test_gini_and_effective_number_extremes(n: int) -> None:
    uniform, one_hot = np.full(n, -0.7), np.eye(n)[0] * -3.0  # signed effects: |effect| counts
    assert gini(uniform) == pytest.approx(0.0, abs=1e-12)
    assert gini(one_hot) == pytest.approx((n - 1) / n)
    assert effective_number(uniform) == pytest.approx(n)
    assert effective_number(one_hot) == pytest.approx(1.0)


def test_hand_examples() -> None:
    x = np.array([1.0, -2.0, 3.0, -4.0])
    assert gini(x) == pytest.approx(0.25)  # sum |xi - xj| = 20 over 2 n^2 mean = 80
    assert effective_number([1.0, 1.0, 0.0]) == pytest.approx(2.0)
    assert top_k_share(x, 1) == pytest.approx(0.4) and top_k_share(x, 2) == pytest.approx(0.7)
    e = np.array([1.0, -5.0, 1.0, 3.0])  # shares .5 .3 .1 .1
    assert n_for_fraction(e, 0.8) == 2  # exactly 0.8 counts as reached
    assert n_for_fraction(e, 0.81) == 3
    assert n_for_fraction(e, 0.9) == 3
    assert n_for_fraction(e, 1.0) == 4
    with pytest.raises(ValueError):
        gini(np.zeros(3))


def test_drops_and_severity_tail() -> None:
    effects = np.array([-1.0, -0.5, 0.2])  # ablated - clean
    assert np.allclose(drops_percent(effects, 2.0), [50.0, 25.0, -10.0])  # type: ignore[arg-type]
    assert worst_drop(effects, 2.0) == pytest.approx(50.0)
    assert worst_drop(effects, -2.0) is None  # a negative clean metric reverses every sign: no percentages
    assert worst_drop(effects, 0.01) is None and worst_drop(effects, -0.05) is None
    drops = [10.0, 20.0, 60.0, 100.0, 150.0]  # -> 0, 0, 0.5, 1, 1
    assert severity_tail(drops) == pytest.approx(0.5)
    assert severity_tail(drops, a=2) == pytest.approx(0.45)
    assert severity_tail(drops, L=60, T=10) == pytest.approx((0 + 0.2 + 1 + 1 + 1) / 5)


def synthetic(n_prompts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """30 components, two of them carrying most of the effect, noisy per prompt."""
    rng = np.random.default_rng(seed)
    mean = -np.r_[2.0, 1.0, rng.uniform(0.0, 0.2, size=28)]
    effects = mean[:, None] + rng.normal(scale=0.5, size=(30, n_prompts))
    clean = 4.0 + rng.normal(scale=1.0, size=n_prompts)
    return effects, clean


def test_summary_points_and_intervals() -> None:
    effects, clean = synthetic(64, 0)
    out = concentration_summary(effects, clean, n_boot=500, seed=0)
    mean_e, mean_c = effects.mean(axis=1), clean.mean()
    assert out["gini"].point == pytest.approx(gini(mean_e))  # type: ignore[union-attr]
    assert out["n_for_0.8"].point == n_for_fraction(mean_e, 0.8)  # type: ignore[union-attr]
    assert out["worst_drop"].point == pytest.approx(worst_drop(mean_e, mean_c))  # type: ignore[union-attr]
    assert out["severity_tail"].point == pytest.approx(severity_tail(-100 * mean_e / mean_c))  # type: ignore[union-attr]
    for name in ["gini", "effective_number", "top_1_share", "worst_drop", "mean_drop", "severity_tail"]:
        iv = out[name]
        assert iv is not None and iv.lo <= iv.point <= iv.hi and iv.lo < iv.hi and iv.n_valid == 500
    again = concentration_summary(effects, clean, n_boot=500, seed=0)
    assert again["gini"] == out["gini"]  # seeded


def test_intervals_shrink_with_more_prompts() -> None:
    widths = []
    for n in (32, 2048):  # 64x the prompts: an eighth of the width for smooth statistics
        out = concentration_summary(*synthetic(n, 1), n_boot=400, seed=0)
        widths.append({k: v.hi - v.lo for k, v in out.items() if v is not None})
    for key in ["gini", "effective_number", "top_1_share", "worst_drop"]:
        assert widths[1][key] < 0.5 * widths[0][key]


def test_percent_statistics_none_when_clean_near_zero() -> None:
    effects, clean = synthetic(64, 2)
    out = concentration_summary(effects, clean - clean.mean() + 0.01, n_boot=100)
    assert out["worst_drop"] is None and out["severity_tail"] is None and out["mean_drop"] is None
    assert out["gini"] is not None  # shares do not need the clean metric
    rng = np.random.default_rng(3)
    noisy = 0.5 + rng.normal(scale=5.0, size=64) * np.r_[1.0, -1.0].repeat(32)  # mean 0.5, SE ~0.6
    noisy += 0.5 - noisy.mean()
    assert concentration_summary(effects, noisy, n_boot=100)["worst_drop"] is None
    steady = 0.5 + (noisy - 0.5) * 0.01  # same mean, SE ~0.006
    assert concentration_summary(effects, steady, n_boot=100)["worst_drop"] is not None


def test_bootstrap_ci_vectorised_matches_loop() -> None:
    x = np.random.default_rng(3).normal(loc=2.0, size=200)
    loop = bootstrap_ci(lambda idx: float(x[idx].mean()), 200, n_boot=300, seed=7)
    vec = bootstrap_ci(lambda idx: x[idx].mean(axis=-1), 200, n_boot=300, seed=7, vectorized=True)
    assert loop == pytest.approx(vec)
    point, lo, hi = loop
    assert point == pytest.approx(x.mean()) and lo < point < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(200), rel=0.2)
