"""Representation similarity between teacher and student components.

Every function takes activation matrices with one row per prompt (same prompts, same
order on both sides) and any widths. A constant ("dead") representation has similarity
0.0, never NaN; the functions say so with a ``DegenerateRepresentationWarning`` and
``similarity_matrix`` also lists the dead components in ``DataFrame.attrs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from enum import Enum

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from circuitdiff.analysis._arrays import (
    DegenerateRepresentationWarning,
    Float64Array,
    SmallSampleWarning,
    as_matrix,
    centre,
    is_degenerate,
)
from circuitdiff.analysis.cca import check_sample_size, pwcca, pwcca_from_bases, subspace_basis, svcca
from circuitdiff.analysis.cka import centre_gram, linear_cka, linear_gram, rbf_cka, rbf_gram
from circuitdiff.analysis.pairwise import (
    attention_pattern_similarity,
    functional_similarity,
    principal_direction_similarity,
    procrustes_scores,
    procrustes_similarity,
)

__all__ = [
    "DegenerateRepresentationWarning",
    "SimilarityMeasure",
    "SmallSampleWarning",
    "attention_pattern_similarity",
    "functional_similarity",
    "is_degenerate",
    "linear_cka",
    "principal_direction_similarity",
    "procrustes_similarity",
    "pwcca",
    "rbf_cka",
    "similarity_matrix",
    "svcca",
]


class SimilarityMeasure(str, Enum):
    """Representation similarity measures that ``similarity_matrix`` computes in bulk."""

    LINEAR_CKA = "linear_cka"
    """Linear CKA with debiased HSIC: the default; reliable at small n, rotation/scale invariant."""

    RBF_CKA = "rbf_cka"
    """CKA with Gaussian kernels (bandwidth 0.8 x median distance): also sees non-linear agreement."""

    SVCCA = "svcca"
    """Mean canonical correlation after keeping 99% of variance: needs n well above the kept dims."""

    PWCCA = "pwcca"
    """Canonical correlations weighted by the neuron variance they explain: needs n well above d."""

    PROCRUSTES = "procrustes"
    """Orthogonal Procrustes fit of normalised representations: stricter than CKA (no reweighting)."""


PairFunction = Callable[[np.ndarray, np.ndarray], float]


def _load(side: Mapping[str, ArrayLike], label: str) -> tuple[list[str], list[Float64Array]]:
    if not side:
        raise ValueError(f"no {label} components given")
    names = [str(k) for k in side]
    return names, [as_matrix(v, f"{label} {k}") for k, v in side.items()]


def _cka_features(mats: list[Float64Array], rbf: bool, debiased: bool, sigma_frac: float) -> Float64Array:
    """One unit-norm, flattened centred Gram matrix per component (zeros for dead ones)."""
    n = mats[0].shape[0]
    out = np.zeros((len(mats), n * n))
    for i, m in enumerate(mats):
        if is_degenerate(m):
            continue
        g = centre_gram(rbf_gram(m, sigma_frac) if rbf else linear_gram(m), debiased).ravel()
        norm = float(np.linalg.norm(g))
        if norm > 0.0:
            out[i] = g / norm
    return out


def _stack(blocks: list[Float64Array], n: int) -> Float64Array:
    """(C, n, r_max) stack, narrower blocks zero-padded (zero columns add only zero singular values)."""
    r = max([b.shape[1] for b in blocks] + [1])
    out = np.zeros((len(blocks), n, r))
    for i, b in enumerate(blocks):
        out[i, :, : b.shape[1]] = b
    return out


def _procrustes_block(t_mats: list[Float64Array], s_mats: list[Float64Array]) -> Float64Array:
    n = t_mats[0].shape[0]
    empty = np.zeros((n, 0))
    at = _stack([empty if is_degenerate(m) else procrustes_scores(m) for m in t_mats], n)
    as_ = _stack([empty if is_degenerate(m) else procrustes_scores(m) for m in s_mats], n)
    sim = np.empty((len(t_mats), len(s_mats)))
    for i in range(len(t_mats)):
        sim[i] = np.linalg.svd(np.matmul(at[i].T, as_), compute_uv=False).sum(axis=1)
    return np.clip(sim, 0.0, 1.0)


def _cca_block(
    t_mats: list[Float64Array], s_mats: list[Float64Array], weighted: bool, keep_variance: float, max_dims: int | None
) -> Float64Array:
    n = t_mats[0].shape[0]
    empty = np.zeros((n, 0))
    bt = [empty if is_degenerate(m) else subspace_basis(m, keep_variance, max_dims) for m in t_mats]
    bs = [empty if is_degenerate(m) else subspace_basis(m, keep_variance, max_dims) for m in s_mats]
    kt, ks = np.array([b.shape[1] for b in bt]), np.array([b.shape[1] for b in bs])
    check_sample_size(int(kt.max()), int(ks.max()), n, "similarity_matrix")
    cs = [centre(m) for m in s_mats]
    qs = _stack(bs, n)
    sim = np.zeros((len(t_mats), len(s_mats)))
    for i, qx in enumerate(bt):
        if kt[i] == 0:
            continue
        if not weighted:
            s = np.clip(np.linalg.svd(np.matmul(qx.T, qs), compute_uv=False), 0.0, 1.0)
            m = np.minimum(kt[i], ks)
            sim[i] = np.where(m > 0, (s * (np.arange(s.shape[1]) < m[:, None])).sum(axis=1) / np.maximum(m, 1), 0.0)
            continue
        xc = centre(t_mats[i])
        for j, qy in enumerate(bs):
            if ks[j] > 0:
                sim[i, j] = pwcca_from_bases(qx, qy, xc, cs[j])
    return sim


def similarity_matrix(
    teacher: Mapping[str, ArrayLike],
    student: Mapping[str, ArrayLike],
    measure: SimilarityMeasure | str | PairFunction = SimilarityMeasure.LINEAR_CKA,
    *,
    debiased: bool = True,
    sigma_frac: float = 0.8,
    keep_variance: float | None = None,
    max_dims: int | None = None,
) -> pd.DataFrame:
    """Similarity of every teacher component (rows) to every student component (columns).

    ``teacher``/``student`` map component names to (n_prompts, width) activations, same
    prompts everywhere. CKA keeps one centred Gram matrix per component (memory
    O(components x n^2)) and compares all pairs with one matrix product. ``measure`` may
    also be any pairwise function, e.g. ``attention_pattern_similarity`` on patterns.
    ``keep_variance`` defaults to 0.99 for SVCCA and 1.0 for PWCCA. ``attrs`` holds the
    measure and the dead components (whose rows/columns are 0).
    """
    if callable(measure) and not isinstance(measure, str):
        if not teacher or not student:
            raise ValueError("no teacher or no student components given")
        rows = [[float(measure(np.asarray(x), np.asarray(y))) for y in student.values()] for x in teacher.values()]
        frame = pd.DataFrame(rows, index=[str(k) for k in teacher], columns=[str(k) for k in student])
        return _with_attrs(frame, getattr(measure, "__name__", "custom"), [], [])
    kind = SimilarityMeasure(measure)
    t_names, t_mats = _load(teacher, "teacher")
    s_names, s_mats = _load(student, "student")
    n = t_mats[0].shape[0]
    for name, m in zip(t_names + s_names, t_mats + s_mats, strict=True):
        if m.shape[0] != n:
            raise ValueError(f"component {name} has {m.shape[0]} rows, expected {n} (same prompts everywhere)")
    if kind in (SimilarityMeasure.LINEAR_CKA, SimilarityMeasure.RBF_CKA):
        rbf = kind is SimilarityMeasure.RBF_CKA
        feats = (_cka_features(m, rbf, debiased, sigma_frac) for m in (t_mats, s_mats))
        sim = np.clip(next(feats) @ next(feats).T, -1.0, 1.0)
    elif kind is SimilarityMeasure.PROCRUSTES:
        sim = _procrustes_block(t_mats, s_mats)
    else:
        weighted = kind is SimilarityMeasure.PWCCA
        kv = keep_variance if keep_variance is not None else (1.0 if weighted else 0.99)
        sim = _cca_block(t_mats, s_mats, weighted, kv, max_dims)
    dead_t = [nm for nm, m in zip(t_names, t_mats, strict=True) if is_degenerate(m)]
    dead_s = [nm for nm, m in zip(s_names, s_mats, strict=True) if is_degenerate(m)]
    if dead_t or dead_s:
        warnings.warn(
            f"similarity_matrix: dead components set to 0: teacher {dead_t}, student {dead_s}",
            DegenerateRepresentationWarning,
            stacklevel=2,
        )
    return _with_attrs(pd.DataFrame(sim, index=t_names, columns=s_names), kind.value, dead_t, dead_s)


def _with_attrs(frame: pd.DataFrame, measure: str, dead_t: list[str], dead_s: list[str]) -> pd.DataFrame:
    frame = frame.rename_axis(index="teacher", columns="student")
    frame.attrs.update({"measure": measure, "dead_teacher": dead_t, "dead_student": dead_s})
    return frame
