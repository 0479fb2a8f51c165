"""Measures of a circuit that pruning does not fix by construction.

* The curve: mean metric with only the k most influential components kept, for k from 0
  (everything ablated) to all (clean), each point an exact forward pass.
* Faithfulness under the other ablation type (pruning only constrains the run's own).
* Completeness as Wang et al. (2022) define it: a circuit C of model M is complete when,
  for every subset K of C, F(C \\ K) is close to F(M \\ K), with F(S) the mean metric when
  everything outside S is ablated. The incompleteness score max_K |F(C \\ K) - F(M \\ K)| is
  maximised over K in {empty, C} and ``n_subsets`` random subsets (each member of C in K
  independently with probability 1/2, numpy's default generator seeded with ``seed``), and
  separately over a greedy K (grown one member at a time, each step adding the member that
  widens the gap most, up to 3 steps) with as many steps as ``greedy_budget`` evaluations
  allow (off by default). K = empty gives |F(C) - F(M)| = |1 - faithfulness| (times |clean|),
  so the gap is at least that; what it adds is any K that opens a wider one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from circuitdiff.analysis.circuits import CircuitCurve
from circuitdiff.circuits.buckets import Evaluator
from circuitdiff.models.components import Component

N_SUBSETS = 8
GREEDY_STEPS = 3
GREEDY_BUDGET = 0
"""Evaluations the greedy K may cost per circuit (2 per member tried per step); skipped when one step does not
fit. Off by default: on the shipped pair one step costs about as much as a node sweep per circuit."""
DENSE_CURVE = 32
CURVE_POINTS = 64


def curve_sizes(n: int, dense: int = DENSE_CURVE, points: int = CURVE_POINTS) -> list[int]:
    """Every size when there are few components; else every size up to ``dense``, then geometric to n."""
    if n + 1 <= points:
        return list(range(n + 1))
    tail = np.geomspace(dense + 1, n, points - dense - 1)
    return sorted({*range(dense + 1), *(int(round(x)) for x in tail), n})


def metric_curve(evaluator: Evaluator, order: Sequence[Component], clean: float) -> CircuitCurve:
    """Mean metric with the first k of ``order`` kept (everything else ablated at once), exactly evaluated.

    A point whose set the evaluator already ran (pruning visits the same sets, least influential
    ablated first, for as long as it prunes everything) is read from its memo. The others are
    walked from the clean model down: each ablates the next components on top of the cached
    state that lets it start latest (the previous point's, or the pruning frontier's) from
    that state's recorded prefix, so the whole curve costs at most about one node sweep.
    """
    sizes = curve_sizes(len(order))
    n = len(order)
    values = {n: evaluator.ablated([[]])[0]}
    for k in sorted(sizes, reverse=True)[1:]:
        target = frozenset(order[k:])
        known = evaluator.known(target)
        if known is not None:
            values[k] = known
            continue
        base = evaluator.cached_base(target)
        [(values[k], state)] = evaluator.extend([(base, target - base)])
        evaluator.forget_except([state])
    evaluator.forget_except([])
    return CircuitCurve(sizes=sizes, metric=[values[k] for k in sizes], clean=clean, order=[c.name for c in order])


@dataclass(frozen=True)
class Completeness:
    gap: float
    """max over the sampled K of |F(C \\ K) - F(M \\ K)|, in units of |clean|."""
    worst_k: list[str]
    n_subsets: int
    greedy_gap: float | None


def sampled_subsets(circuit: Sequence[Component], n_subsets: int, seed: int) -> list[list[Component]]:
    """K = empty, K = C and ``n_subsets`` random subsets (each member in K with probability 1/2), seeded."""
    rng = np.random.default_rng(seed)
    draws = [[c for c, keep in zip(circuit, rng.random(len(circuit)) < 0.5) if keep] for _ in range(n_subsets)]
    return [[], list(circuit), *draws]


def completeness(evaluator: Evaluator, circuit: Sequence[Component], clean: float, *,
                 n_subsets: int = N_SUBSETS, seed: int = 0, greedy_budget: int = GREEDY_BUDGET) -> Completeness:
    """Wang et al.'s incompleteness of ``circuit`` over sampled and (when cheap) greedy subsets K."""
    scale = abs(clean) if clean else float("nan")
    subsets = sampled_subsets(circuit, n_subsets, seed)
    gaps = _gaps(evaluator, circuit, subsets)
    worst = int(np.argmax(gaps))
    greedy = None
    steps = min(GREEDY_STEPS, len(circuit), greedy_budget // max(1, 2 * len(circuit)))
    if circuit and steps > 0:
        greedy = _greedy_gap(evaluator, circuit, steps)
    return Completeness(gap=gaps[worst] / scale, worst_k=[c.name for c in subsets[worst]],
                        n_subsets=len(subsets), greedy_gap=None if greedy is None else greedy / scale)


def _gaps(evaluator: Evaluator, circuit: Sequence[Component], subsets: Sequence[Sequence[Component]]) -> list[float]:
    """|F(C \\ K) - F(M \\ K)| for each K."""
    inside = [[c for c in circuit if c not in set(k)] for k in subsets]
    without_k = evaluator.kept(inside)
    model_without_k = evaluator.ablated(subsets)
    return [abs(a - b) for a, b in zip(without_k, model_without_k)]


def _greedy_gap(evaluator: Evaluator, circuit: Sequence[Component], steps: int) -> float:
    k: list[Component] = []
    best = _gaps(evaluator, circuit, [k])[0]
    for _ in range(steps):
        options = [[*k, c] for c in circuit if c not in k]
        gaps = _gaps(evaluator, circuit, options)
        i = int(np.argmax(gaps))
        k, best = options[i], max(best, gaps[i])
    return best
