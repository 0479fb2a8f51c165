"""The study's MLP representation comparison on matched MLP pairs, held out and with intervals.

Inputs are plain arrays: each MLP's output at the read position over the same prompts
(``ModelTaskRun.read_acts``), and the (teacher, student) pairs from the matching. SVCCA and
PWCCA are fitted on one half of the prompts and scored on the other (``heldout``); the
top-3 principal-direction cosine compares the teacher's directions from one half with the
student's from the other, so shared prompt noise cannot make two MLPs look alike.
Intervals resample the scoring half's prompts with the fit held fixed (a prompt never sits
in both halves, which resampling before the split would allow).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import DegenerateRepresentationWarning, as_matrix, same_rows
from circuitdiff.analysis.bootstrap import bootstrap_indices, percentile_interval
from circuitdiff.analysis.heldout import fit_cca, heldout_correlations, split_half
from circuitdiff.analysis.pairwise import principal_direction_similarity


@dataclass(frozen=True)
class HeldoutScore:
    """A held-out similarity with its percentile interval over the scoring prompts."""

    value: float
    lo: float
    hi: float


def _cca_scores(r: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(r)
    if not ok.any():
        return 0.0, 0.0
    return float(r[ok].mean()), float(weights[ok] @ r[ok] / weights[ok].sum())


def heldout_cca_with_interval(x: ArrayLike, y: ArrayLike, seed: int = 0, n_boot: int = 200,
                              keep_variance: float = 0.99, max_dims: int | None = None
                              ) -> tuple[HeldoutScore, HeldoutScore]:
    """(SVCCA, PWCCA) averaged over both directions of one seeded split, each with an interval."""
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    halves = split_half(xm.shape[0], seed)
    fits = [(fit_cca(xm[f], ym[f], keep_variance, max_dims), sc) for f, sc in (halves, halves[::-1])]
    point = np.mean([_cca_scores(heldout_correlations(fit, xm[sc], ym[sc]), fit.pwcca_weights)
                     for fit, sc in fits], axis=0)
    draws = [bootstrap_indices(len(sc), n_boot, seed + 1 + i) for i, (_, sc) in enumerate(fits)]
    boot = np.array([np.mean([_cca_scores(heldout_correlations(fit, xm[sc[d[b]]], ym[sc[d[b]]]), fit.pwcca_weights)
                              for (fit, sc), d in zip(fits, draws)], axis=0) for b in range(n_boot)])
    out = []
    for j in range(2):
        lo, hi = percentile_interval(boot[:, j])
        out.append(HeldoutScore(float(point[j]), lo, hi))
    return out[0], out[1]


def heldout_principal_cosine(x: ArrayLike, y: ArrayLike, k: int = 3, seed: int = 0) -> float:
    """Mean |cos| of the i-th principal directions (i < k), teacher from one half and student from the other."""
    xm, ym = as_matrix(x, "X"), as_matrix(y, "Y")
    same_rows(xm, ym)
    a, b = split_half(xm.shape[0], seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)
        return float(np.mean([principal_direction_similarity(xm[a], ym[b], k),
                              principal_direction_similarity(xm[b], ym[a], k)]))
