"""Student-to-teacher component matching from a similarity matrix (teacher rows x student columns).

Matching is kind-restricted by default: a head is matched only with heads and an MLP only
with MLPs (names ending in ``.MLP`` are MLPs, anything else is a head). Cross-kind cells
are then never read, so they may be NaN (e.g. a matrix assembled from per-kind blocks).
The direction is always student -> teacher, to avoid the reference study's mixing of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Match:
    """One student component paired with one teacher component, and their similarity."""

    student: str
    teacher: str
    similarity: float


def component_kind(name: str) -> str:
    """``"mlp"`` for names ending in ``.MLP`` (e.g. ``L3.MLP``), otherwise ``"head"``."""
    return "mlp" if str(name).endswith(".MLP") else "head"


def kind_blocks(sim: pd.DataFrame, same_kind: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(teacher row positions, student column positions) of each block allowed to match."""
    rows, cols = np.arange(sim.shape[0]), np.arange(sim.shape[1])
    if not same_kind:
        return [(rows, cols)]
    t_kind = np.array([component_kind(n) for n in sim.index])
    s_kind = np.array([component_kind(n) for n in sim.columns])
    return [(rows[t_kind == k], cols[s_kind == k]) for k in sorted(set(t_kind) & set(s_kind))]


def _block(sim: pd.DataFrame, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    values = sim.to_numpy(dtype=np.float64)[np.ix_(r, c)]
    if np.isnan(values).any():
        raise ValueError("similarity matrix has NaN where components may be matched")
    return values


def match_one_to_one(sim: pd.DataFrame, same_kind: bool = True) -> list[Match]:
    """Optimal one-to-one matching maximising total similarity (Hungarian algorithm).

    With unequal counts, min(teachers, students) pairs are made per kind; every component
    appears at most once. Returned in the student column order.
    """
    out: list[Match] = []
    for r, c in kind_blocks(sim, same_kind):
        if r.size == 0 or c.size == 0:
            continue
        values = _block(sim, r, c)
        ti, sj = linear_sum_assignment(values, maximize=True)
        for i, j in zip(ti, sj, strict=True):
            out.append(Match(str(sim.columns[c[j]]), str(sim.index[r[i]]), float(values[i, j])))
    order = {name: k for k, name in enumerate(map(str, sim.columns))}
    return sorted(out, key=lambda m: order[m.student])


def match_many_to_one(sim: pd.DataFrame, top_k: int = 1, same_kind: bool = True) -> list[Match]:
    """Each student component with its ``top_k`` most similar teacher components.

    Teacher components may repeat across students: several teacher components landing on
    one student component is how compression shows. Ties go to the earlier teacher row.
    Returned by student column order, then by decreasing similarity.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out: list[tuple[int, Match]] = []
    for r, c in kind_blocks(sim, same_kind):
        if r.size == 0 or c.size == 0:
            continue
        values = _block(sim, r, c)
        for j in range(c.size):
            best = np.argsort(-values[:, j], kind="stable")[:top_k]
            out.extend((c[j], Match(str(sim.columns[c[j]]), str(sim.index[r[i]]), float(values[i, j]))) for i in best)
    out.sort(key=lambda item: item[0])
    return [m for _, m in out]
