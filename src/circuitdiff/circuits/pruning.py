"""Iterative node pruning at several thresholds in one ordered pass.

Definition (per threshold T, as in the reference study): visit components least influential
first; prune one (ablate it for good) when, ablated on top of everything already pruned,
the mean metric stays within T * |clean| of the clean metric. What survives is the circuit.

All thresholds walk the same order together. Thresholds at the same place with equal pruned
sets share their evaluations; the (at most one per threshold) distinct states are stacked in
one pass that starts at the lowest layer it changes, from each state's recorded prefix
(``CircuitEvaluator.extend``), so a decision costs what the node sweep pays for that
component rather than a full forward pass. Where one pass of all prompts is too small to keep
a CPU matrix multiply busy, each walk also tries its next candidates speculatively as
cumulative prefixes (as if each were pruned): every value up to the first failing candidate is
exactly the sequential decision, the failing one is kept, and the walk resumes after it.
Every decision is an exact evaluation: the circuits are those of the plain sequential
definition, threshold by threshold.

The walk also keeps its *frontier*: the furthest state in which every candidate so far was
pruned (the first ``pos`` of the order, all ablated). Those states are exactly the metric
curve's points (least influential ablated first), so the curve reads them from the memo and
continues from the frontier's prefix instead of walking from the clean model again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from circuitdiff.circuits.buckets import Evaluator
from circuitdiff.circuits.evaluation import CLEAN, State
from circuitdiff.models.components import Component


def prune_thresholds(
    evaluator: Evaluator,
    order: Sequence[Component],
    clean: float,
    thresholds: Sequence[float],
    progress: Callable[[float], None] | None = None,
) -> dict[float, list[Component]]:
    """The circuit at each threshold (components in model order); ``progress`` gets one step per decision."""
    walks: dict[float, tuple[State, int]] = {t: (CLEAN, 0) for t in thresholds}
    cap = max(1, evaluator.efficient_variants // max(1, len(thresholds)))
    ahead = dict.fromkeys(thresholds, 1)
    evaluator.prefix(CLEAN)
    frontier: tuple[int, State] = (0, CLEAN)
    while any(pos < len(order) for _, pos in walks.values()):
        groups: dict[tuple[State, int], int] = {}
        for t, (state, pos) in walks.items():
            if pos < len(order):
                groups[state, pos] = min(max(groups.get((state, pos), 0), ahead[t]), len(order) - pos)
        steps = [(state, order[pos : pos + j]) for (state, pos), n in groups.items() for j in range(1, n + 1)]
        results = iter(evaluator.extend(steps))
        tried = {key: [next(results) for _ in range(n)] for key, n in groups.items()}
        for t, (state, pos) in walks.items():
            if pos >= len(order):
                continue
            new_state, new_pos, passed_all = state, pos, True
            for value, grown in tried[state, pos]:
                new_pos += 1
                if abs(value - clean) >= t * abs(clean):
                    passed_all = False
                    break  # kept; later speculative values assumed it was pruned
                new_state = grown
            walks[t] = (new_state, new_pos)
            ahead[t] = min(2 * ahead[t], cap) if passed_all else max(1, ahead[t] // 2)
            if progress is not None:
                progress(new_pos - pos)
        frontier = max([frontier, *((pos, state) for state, pos in walks.values() if len(state) == pos)],
                       key=lambda v: v[0])
        evaluator.forget_except([frontier[1], *(state for state, _ in walks.values())])
    # the measures of each circuit start from its state, the metric curve from the frontier
    evaluator.pinned |= {frontier[1], *(state for state, _ in walks.values())}
    return {t: [c for c in evaluator.components if c not in state] for t, (state, _) in walks.items()}
