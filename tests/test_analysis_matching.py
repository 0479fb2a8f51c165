"""Matching: Hungarian recovers a planted permutation; many-to-one shows compression; kinds stay apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuitdiff.analysis.matching import Match, component_kind, match_many_to_one, match_one_to_one


def test_hungarian_recovers_planted_permutation() -> None:
    rng = np.random.default_rng(0)
    names = [f"L{i // 4}.H{i % 4}" for i in range(12)]
    perm = rng.permutation(12)
    sim = rng.uniform(0.0, 0.6, size=(12, 12))
    sim[perm, np.arange(12)] = rng.uniform(0.7, 0.9, size=12)  # student j <- teacher perm[j]
    # a greedy decoy: teacher perm[0] also looks good for student 1, but the optimum avoids it
    sim[perm[0], 1] = 0.95
    frame = pd.DataFrame(sim, index=names, columns=[f"s{j}.H0" for j in range(12)])
    matches = match_one_to_one(frame)
    assert [m.student for m in matches] == list(frame.columns)
    assert [m.teacher for m in matches] == [names[p] for p in perm]
    assert matches[0] == Match("s0.H0", names[perm[0]], pytest.approx(sim[perm[0], 0]))  # type: ignore[arg-type]


def test_one_to_one_unequal_counts_uses_each_component_once() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.uniform(size=(7, 3)), index=[f"t{i}" for i in range(7)], columns=["a", "b", "c"])
    frame.iloc[2, :] = 1.0  # one teacher component best for everyone: still used once
    matches = match_one_to_one(frame)
    assert len(matches) == 3
    assert len({m.teacher for m in matches}) == 3
    assert sum(m.teacher == "t2" for m in matches) == 1
    wide = match_one_to_one(frame.T)  # 3 teachers, 7 students: only 3 students matched
    assert len(wide) == 3 and len({m.student for m in wide}) == 3


def test_many_to_one_maps_two_copies_to_one() -> None:
    frame = pd.DataFrame(
        [[1.0, 0.1], [1.0, 0.2], [0.3, 0.9]],
        index=["L0.H0", "L5.H3", "L2.H1"],  # L0.H0 and L5.H3 are copies of one function
        columns=["L0.H0", "L1.H0"],
    )
    many = match_many_to_one(frame, top_k=2)
    assert [(m.student, m.teacher) for m in many] == [
        ("L0.H0", "L0.H0"),
        ("L0.H0", "L5.H3"),
        ("L1.H0", "L2.H1"),
        ("L1.H0", "L5.H3"),
    ]
    top1 = match_many_to_one(frame)  # top_k=1
    assert [m.teacher for m in top1] == ["L0.H0", "L2.H1"]
    one = match_one_to_one(frame)
    assert sorted(m.teacher for m in one) == ["L0.H0", "L2.H1"]  # one-to-one cannot show it


def test_kind_restriction_is_default() -> None:
    assert component_kind("L3.MLP") == "mlp" and component_kind("L3.H7") == "head"
    frame = pd.DataFrame([[0.2, 0.99], [0.99, 0.3]], index=["L0.H0", "L0.MLP"], columns=["L0.H0", "L0.MLP"])
    assert [(m.student, m.teacher) for m in match_one_to_one(frame)] == [("L0.H0", "L0.H0"), ("L0.MLP", "L0.MLP")]
    assert [m.teacher for m in match_many_to_one(frame)] == ["L0.H0", "L0.MLP"]
    assert [m.teacher for m in match_many_to_one(frame, same_kind=False)] == ["L0.MLP", "L0.H0"]
    frame.loc["L0.MLP", "L0.H0"] = np.nan  # cross-kind cells are never read
    assert len(match_one_to_one(frame)) == 2
    with pytest.raises(ValueError):
        match_one_to_one(frame, same_kind=False)
