"""Alignment score: the properties in its definition, exactness, and the contrast with the paper's A."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from circuitdiff.analysis.alignment import (
    alignment_score,
    alignment_transport,
    paper_alignment,
    paper_influence,
)
from circuitdiff.analysis.similarity import similarity_matrix

HEADS = [f"L{i // 4}.H{i % 4}" for i in range(8)]


def identity_sim(rng: np.random.Generator, names: list[str]) -> pd.DataFrame:
    s = rng.uniform(0.0, 0.8, size=(len(names), len(names)))
    np.fill_diagonal(s, 1.0)
    return pd.DataFrame(s, index=names, columns=names)


def test_identical_models_score_one() -> None:
    rng = np.random.default_rng(0)
    sim = identity_sim(rng, HEADS)
    mass = pd.Series(rng.normal(size=8), index=HEADS)  # signed effects: signs ignored
    assert alignment_score(mass, mass, sim) == pytest.approx(1.0, abs=1e-12)


def test_permuted_copy_scores_one() -> None:
    rng = np.random.default_rng(1)
    sim = identity_sim(rng, HEADS)
    mass = rng.uniform(0.1, 1.0, size=8)
    perm = rng.permutation(8)
    permuted = pd.DataFrame(sim.to_numpy()[:, perm], index=HEADS, columns=[f"s.H{j}" for j in range(8)])
    assert alignment_score(mass, mass[perm], permuted) == pytest.approx(1.0, abs=1e-12)
    # and a mismatched influence on the permuted copy scores below 1
    assert alignment_score(mass, mass, permuted) < 0.99


def test_many_to_one_compression_scores_one() -> None:
    sim = pd.DataFrame(
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], index=["L0.H0", "L1.H0", "L2.H0"], columns=["L0.H0", "L1.H0"]
    )
    teacher = pd.Series([0.3, 0.3, 0.4], index=sim.index)
    student = pd.Series([0.6, 0.4], index=sim.columns)
    assert alignment_score(teacher, student, sim) == pytest.approx(1.0)
    plan = alignment_transport(teacher, student, sim)
    assert plan.loc["L0.H0", "L0.H0"] == pytest.approx(0.3) and plan.loc["L1.H0", "L0.H0"] == pytest.approx(0.3)


def test_zero_influence_component_weighs_nothing() -> None:
    rng = np.random.default_rng(2)
    sim = identity_sim(rng, HEADS) * 0.9
    tm, sm = pd.Series(rng.uniform(size=8), index=HEADS), pd.Series(rng.uniform(size=8), index=HEADS)
    base = alignment_score(tm, sm, sim)
    big = sim.copy()
    big.loc["L9.H9"] = 0.0  # a teacher component similar to nothing ...
    big["L9.H9"] = 0.0  # ... and a student one
    tm2, sm2 = pd.concat([tm, pd.Series({"L9.H9": 0.0})]), pd.concat([sm, pd.Series({"L9.H9": 0.0})])
    assert alignment_score(tm2, sm2, big) == pytest.approx(base, abs=1e-12)
    tm2["L9.H9"] = tm.sum()  # give it influence: now it must lower the score
    assert alignment_score(tm2, sm2, big) < base - 0.2


def test_unrelated_models_score_low() -> None:
    rng = np.random.default_rng(3)
    names = [*HEADS, "L0.MLP", "L1.MLP"]
    teacher = {n: rng.normal(size=(64, 16)) for n in names}
    student = {n: rng.normal(size=(64, 16)) for n in names}
    sim = similarity_matrix(teacher, student)
    assert alignment_score(rng.uniform(size=10), rng.uniform(size=10), sim) < 0.15
    related = {n: x @ rng.normal(size=(16, 16)) for n, x in teacher.items()}
    assert alignment_score(np.ones(10), np.ones(10), similarity_matrix(teacher, related)) > 0.6


def test_score_depends_on_influence_unlike_paper_alignment() -> None:
    rng = np.random.default_rng(4)
    t_names = [f"L{layer}.H{h}" for layer in range(12) for h in range(12)]
    s_names = [f"L{layer}.H{h}" for layer in range(6) for h in range(12)]
    sim = pd.DataFrame(rng.uniform(0.0, 0.2, size=(144, 72)), index=t_names, columns=s_names)
    for j in range(72):
        sim.iloc[j, j] = 0.95  # teacher heads 0..71 have a student counterpart, 72..143 do not
    student = pd.Series(0.01, index=s_names)
    student.iloc[:20] = 1.0
    on_matched = pd.Series(0.01, index=t_names)
    on_matched.iloc[:20] = 1.0
    on_unmatched = pd.Series(0.01, index=t_names)
    on_unmatched.iloc[100:120] = 1.0
    ours = alignment_score(on_matched, student, sim), alignment_score(on_unmatched, student, sim)
    paper = paper_alignment(on_matched, student, sim), paper_alignment(on_unmatched, student, sim)
    assert ours[0] > 0.85 and ours[1] < 0.35
    assert abs(paper[0] - paper[1]) < 0.03 and paper[1] > 0.9  # A is blind to where reliance sits


def test_transport_is_optimal_and_has_the_marginals() -> None:
    rng = np.random.default_rng(5)
    sim = pd.DataFrame(rng.uniform(-0.2, 1.2, size=(6, 4)), index=[f"t{i}" for i in range(6)], columns=list("abcd"))
    p, q = rng.uniform(size=6), rng.uniform(size=4)
    plan = alignment_transport(p, q, sim)
    assert np.allclose(plan.sum(axis=1), p / p.sum()) and np.allclose(plan.sum(axis=0), q / q.sum())
    s = np.clip(sim.to_numpy(), 0, 1)
    a_eq = np.vstack([np.kron(np.eye(6), np.ones(4)), np.kron(np.ones(6), np.eye(4))])
    lp = linprog(-s.ravel(), A_eq=a_eq, b_eq=np.concatenate([p / p.sum(), q / q.sum()]), bounds=(0, None))
    assert plan.attrs["score"] == pytest.approx(-lp.fun, abs=1e-9)
    assert alignment_score(p, q, sim) == pytest.approx(-lp.fun, abs=1e-9)


def test_cross_kind_similarity_ignored_by_default() -> None:
    sim = pd.DataFrame([[0.0, 1.0], [1.0, 0.0]], index=["L0.H0", "L0.MLP"], columns=["L0.H0", "L0.MLP"])
    assert alignment_score(np.ones(2), np.ones(2), sim) == pytest.approx(0.0)
    assert alignment_score(np.ones(2), np.ones(2), sim, same_kind=False) == pytest.approx(1.0)


def test_invalid_influence_raises() -> None:
    sim = pd.DataFrame(np.eye(2), index=["a.H0", "b.H0"], columns=["a.H0", "b.H0"])
    with pytest.raises(ValueError, match="zero"):
        alignment_score(np.zeros(2), np.ones(2), sim)
    with pytest.raises(ValueError):
        alignment_score(pd.Series([1.0, 1.0], index=["a.H0", "x.H0"]), np.ones(2), sim)
    with pytest.raises(ValueError):
        alignment_score(np.array([1.0, np.nan]), np.ones(2), sim)


def test_paper_alignment_hand_example() -> None:
    sim = pd.DataFrame([[0.9, 0.2], [0.4, 0.6]], index=["t0.H0", "t1.H0"], columns=["s0.H0", "s1.H0"])
    infl_t = paper_influence([1.0, 1.5], 2.0)  # |100 (1 - LD_abl / LD_clean)| = 50, 25
    assert np.allclose(infl_t, [50.0, 25.0])
    infl_s = np.array([10.0, 30.0])  # shares 0.25, 0.75; teacher shares 2/3, 1/3
    expected = (0.9 * (1 - abs(0.25 - 2 / 3)) + 0.6 * (1 - abs(0.75 - 1 / 3))) / 2
    assert paper_alignment(infl_t, infl_s, sim) == pytest.approx(expected)
    with pytest.warns(UserWarning):
        paper_influence([1.0], -0.5)
