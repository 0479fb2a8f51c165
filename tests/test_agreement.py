"""Agreement of an estimate with exact effects: overall Spearman, Spearman on the top-k by exact |effect|,
and the |exact|-weighted Pearson correlation, each against scipy/numpy computed here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from circuitdiff.analysis.agreement import agreement, weighted_correlation


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    cov = np.cov(x, y, aweights=w)  # numpy's weighted covariance, independent of circuitdiff's
    return float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))


def test_each_figure_equals_its_independent_computation() -> None:
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(200) * rng.exponential(1.0, 200)
    estimate = exact + rng.standard_normal(200)
    found = agreement(exact, estimate, top_k=30)
    assert found.n == 200 and found.top_k == 30
    assert found.spearman == pytest.approx(spearmanr(exact, estimate).statistic, abs=1e-12)
    top = sorted(range(200), key=lambda i: -abs(exact[i]))[:30]
    assert found.top_k_spearman == pytest.approx(spearmanr(exact[top], estimate[top]).statistic, abs=1e-12)
    assert found.weighted_correlation == pytest.approx(_weighted_pearson(exact, estimate, np.abs(exact)), abs=1e-12)
    # equal weights: the plain Pearson correlation
    assert weighted_correlation(exact, estimate, np.ones(200)) == pytest.approx(pearsonr(exact, estimate).statistic)


def test_near_zero_noise_sinks_the_overall_figure_but_not_the_ones_that_look_where_it_matters() -> None:
    """The issue's case: a few large effects estimated well, hundreds of near-zero ones in random order."""
    rng = np.random.default_rng(1)
    large = np.linspace(1.0, 3.0, 20)
    exact = np.concatenate([large, 1e-4 * rng.standard_normal(500)])
    estimate = np.concatenate([0.5 * large, 1e-3 * rng.standard_normal(500)])  # right order, wrong scale; noise below
    found = agreement(exact, estimate, top_k=20)
    assert abs(found.spearman) < 0.3  # the 500 near-zero items decide the overall rank correlation
    assert found.top_k_spearman == pytest.approx(1.0)
    assert found.weighted_correlation > 0.99


def test_ground_truths_and_undefined_cases() -> None:
    exact = np.array([3.0, -2.0, 0.5, 0.1, -0.05])
    same = agreement(exact, 7.0 * exact, top_k=3)
    assert [same.spearman, same.top_k_spearman, same.weighted_correlation] == pytest.approx([1.0, 1.0, 1.0])
    opposite = agreement(exact, -exact, top_k=10)
    assert opposite.top_k == 5 and opposite.weighted_correlation == pytest.approx(-1.0)
    flat = agreement(exact, np.zeros(5), top_k=3)  # a constant estimate: no correlation is defined
    assert flat.spearman is None and flat.top_k_spearman is None and flat.weighted_correlation is None
    assert agreement(exact[:2], exact[:2], top_k=2).spearman is None  # fewer than 3 items
