r"""Teacher/student alignment: circuitdiff's influence-weighted score, and the reference study's A.

**The alignment score.** Let the teacher have components t_1..t_m and the student
s_1..s_k, and let e_c be component c's ablation effect on the task metric (for example
mean ablated minus clean logit difference over the prompts; its sign is ignored). The
influence shares are

    p_i = |e(t_i)| / sum_a |e(t_a)|,        q_j = |e(s_j)| / sum_b |e(s_b)|,

so each model's reliance is a probability distribution over its own components. Let
S_ij = min(1, max(0, sim(t_i, s_j))) be the similarity clipped to [0, 1]; by default
(``same_kind=True``) S_ij = 0 when t_i and s_j are of different kinds (head vs MLP).
The score is the largest similarity-weighted mass that can be carried from the
teacher's reliance onto the student's reliance:

    alignment = max over pi >= 0 with sum_j pi_ij = p_i and sum_i pi_ij = q_j of  sum_ij pi_ij S_ij
              = 1 - W(p, q),  W the optimal-transport (earth mover's) cost under ground cost 1 - S,

computed exactly (network simplex, POT ``ot.emd``). pi is the transport plan
(``alignment_transport``): pi_ij is the share of reliance that teacher component i hands
to student component j.

Properties. It lies in [0, 1]; it is 1 for identical models and for any relabelling of
either model's components (with the similarity relabelled alike); several teacher
components may pour into one student component (compression) and vice versa; a
component with zero influence carries no mass and cannot change the score; moving
influence onto components with no similar counterpart lowers it. It is at most
sum_i p_i max_j S_ij and at most sum_j q_j max_i S_ij. It is undefined when either model
has zero total influence: we raise ``ValueError`` rather than return a number.

Caveats. Being a maximum, it is pulled up by noise in S: a pair of unrelated models
scores above 0, so it is reported with a chance level (the same score for several
randomly initialised students, ``circuitdiff.analysis.pair``) and a BCa interval (the
maximum makes the score biased, and BCa corrects the interval for it). It depends on the
similarity measure chosen, which should be named with it.

**The reference study's A** (``paper_alignment``) is mean over student components of
S * (1 - |I_s - I_t|) with greedy student -> most-similar-teacher matching and influences
I normalised to sum 1 per model. With hundreds of components every I is near 0, so A is
essentially the mean best similarity and hardly responds to influence; it is kept only
to reproduce published numbers.
"""

from __future__ import annotations

import warnings
from typing import TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from circuitdiff.analysis.influence import MIN_CLEAN_METRIC
from circuitdiff.analysis.matching import kind_blocks, match_many_to_one

Mass: TypeAlias = pd.Series | np.ndarray
"""Per-component effects: a Series by component name, or an array in the similarity matrix's order."""


def _masses(values: Mass, names: pd.Index, label: str) -> np.ndarray:
    """|values| in ``names`` order; a Series must cover exactly those names."""
    if isinstance(values, pd.Series):
        missing, extra = names.difference(values.index), values.index.difference(names)
        if len(missing) or len(extra):
            raise ValueError(
                f"{label} names differ from the similarity matrix: missing {list(missing)}, extra {list(extra)}"
            )
        arr = values.reindex(names).to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size != len(names):
            raise ValueError(f"{label} has {arr.size} entries, the similarity matrix has {len(names)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{label} contains NaN or infinite values")
    return np.abs(arr)


def _shares(mass: np.ndarray, label: str) -> np.ndarray:
    total = mass.sum()
    if total <= 0.0:
        raise ValueError(f"{label} influence is zero for every component: the alignment score is undefined")
    return mass / total


def _clipped_similarity(sim: pd.DataFrame, same_kind: bool) -> np.ndarray:
    """S clipped to [0, 1], cross-kind cells set to 0 when ``same_kind``; NaN not allowed where used."""
    raw = sim.to_numpy(dtype=np.float64)
    s = np.zeros_like(raw)
    for r, c in kind_blocks(sim, same_kind):
        block = raw[np.ix_(r, c)]
        if np.isnan(block).any():
            raise ValueError("similarity matrix has NaN where components may be compared")
        s[np.ix_(r, c)] = np.clip(block, 0.0, 1.0)
    return s


def same_kind_mask(sim: pd.DataFrame, same_kind: bool = True) -> np.ndarray:
    """Boolean (teacher x student) mask of the cells the score may use (same kind when ``same_kind``)."""
    mask = np.zeros(sim.shape, dtype=bool)
    for r, c in kind_blocks(sim, same_kind):
        mask[np.ix_(r, c)] = True
    return mask


def transport_plan(p: np.ndarray, q: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float]:
    """(plan, score) for shares ``p``, ``q`` (each summing to 1) and clipped similarity ``s``.

    The array core of ``alignment_transport``, for callers that score many resamples.
    """
    import ot  # 0.4-0.7 s of CPU (it loads scikit-learn): paid at the first solve, not at start-up

    rows, cols = np.flatnonzero(p > 0), np.flatnonzero(q > 0)
    pr, qc = p[rows] / p[rows].sum(), q[cols] / q[cols].sum()
    cost = 1.0 - s[np.ix_(rows, cols)]
    sub, log = ot.emd(pr, qc, cost, numItermax=10_000_000, log=True)
    if log.get("warning"):
        raise RuntimeError(f"optimal transport did not converge: {log['warning']}")
    plan = np.zeros_like(s)
    plan[np.ix_(rows, cols)] = sub
    return plan, float(np.clip((plan * s).sum(), 0.0, 1.0))


def score_arrays(teacher_mass: np.ndarray, student_mass: np.ndarray, sim: np.ndarray, mask: np.ndarray) -> float:
    """The alignment score from plain arrays: effects (signs ignored), raw similarity, usable-cell mask.

    NaN similarity outside the mask is ignored; inside it raises, as in ``alignment_score``.
    """
    s = np.where(mask, sim, 0.0)
    if np.isnan(s).any():
        raise ValueError("similarity matrix has NaN where components may be compared")
    p = _shares(np.abs(np.asarray(teacher_mass, dtype=np.float64)), "teacher")
    q = _shares(np.abs(np.asarray(student_mass, dtype=np.float64)), "student")
    return transport_plan(p, q, np.clip(s, 0.0, 1.0))[1]


def alignment_transport(
    teacher_mass: Mass, student_mass: Mass, sim: pd.DataFrame, same_kind: bool = True
) -> pd.DataFrame:
    """Optimal transport plan pi (teacher rows x student columns) behind ``alignment_score``.

    ``teacher_mass``/``student_mass``: per-component effects (Series by component name, or
    arrays in ``sim``'s row/column order); signs are ignored. ``attrs["score"]`` holds the score.
    """
    p = _shares(_masses(teacher_mass, sim.index, "teacher_mass"), "teacher")
    q = _shares(_masses(student_mass, sim.columns, "student_mass"), "student")
    plan, score = transport_plan(p, q, _clipped_similarity(sim, same_kind))
    frame = pd.DataFrame(plan, index=sim.index, columns=sim.columns)
    frame.attrs["score"] = score
    return frame


def alignment_score(teacher_mass: Mass, student_mass: Mass, sim: pd.DataFrame, same_kind: bool = True) -> float:
    """Influence-weighted alignment in [0, 1] (definition in the module docstring).

    Raises ValueError when either model's influence is zero everywhere.
    """
    return float(alignment_transport(teacher_mass, student_mass, sim, same_kind).attrs["score"])


def paper_influence(ld_ablated: ArrayLike, ld_clean: float) -> np.ndarray:
    """The reference study's influence |100 (1 - LD_ablated / LD_clean)| per component.

    Faithful, flaws included: it warns when the clean metric (LD) is negative or
    below MIN_CLEAN_METRIC, where this percentage is meaningless (circuitdiff's own
    statistics return None there instead).
    """
    if ld_clean == 0.0:
        raise ValueError("clean metric is 0: percent-of-clean influence is undefined")
    if ld_clean < MIN_CLEAN_METRIC:
        warnings.warn(f"clean metric {ld_clean:.3g} <= 0 or near 0: influences are meaningless", stacklevel=2)
    return np.abs(100.0 * (1.0 - np.asarray(ld_ablated, dtype=np.float64) / ld_clean))


def paper_alignment(infl_teacher: Mass, infl_student: Mass, sim: pd.DataFrame, same_kind: bool = True) -> float:
    """The reference study's A, reproduced: mean over student components of S * (1 - |I_s - I_t|).

    ``infl_*``: influences I per component (``paper_influence``; any non-negative scale, as
    they are normalised to sum 1 within each model here). ``sim``: teacher x student
    similarity (the study used attention-pattern cosine for heads and top-3 principal
    direction cosine for MLPs). Each student component is matched greedily to its most
    similar teacher component (of its kind), S unclipped. For models that tokenise
    differently, ``analysis.pair.paper_score`` builds the head block from attention pooled onto
    the common segments of both tokenisations (``analysis.token_alignment``), so A is defined
    across model families as well.
    """
    i_t = _shares(_masses(infl_teacher, sim.index, "infl_teacher"), "teacher")
    i_s = _shares(_masses(infl_student, sim.columns, "infl_student"), "student")
    t_pos = {str(n): k for k, n in enumerate(sim.index)}
    s_pos = {str(n): k for k, n in enumerate(sim.columns)}
    terms = [
        m.similarity * (1.0 - abs(i_s[s_pos[m.student]] - i_t[t_pos[m.teacher]]))
        for m in match_many_to_one(sim, top_k=1, same_kind=same_kind)
    ]
    if not terms:
        raise ValueError("no student component could be matched to a teacher component")
    return float(np.mean(terms))
