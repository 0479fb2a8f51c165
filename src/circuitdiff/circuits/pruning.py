"""Iterative node pruning at several thresholds in one ordered pass.

Definition (per threshold T, as in the reference study): visit components least influential
first; prune one (ablate it for good) when, ablated on top of everything already pruned,
the mean metric stays within T * |clean| of the clean metric. What survives is the circuit.

All thresholds walk the same order together. At each candidate, thresholds whose pruned
sets are equal share one evaluation; the (at most one per threshold) distinct states are
stacked in one pass that starts at the candidate's layer from each state's recorded prefix
(``CircuitEvaluator.extend``), so a decision costs what the node sweep pays for that
component, not a full forward pass. Every decision is an exact evaluation: the circuits are
those of the plain sequential definition, threshold by threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from circuitdiff.circuits.evaluation import CLEAN, CircuitEvaluator, State
from circuitdiff.models.components import Component


def prune_thresholds(
    evaluator: CircuitEvaluator,
    order: Sequence[Component],
    clean: float,
    thresholds: Sequence[float],
    progress: Callable[[float], None] | None = None,
) -> dict[float, list[Component]]:
    """The circuit at each threshold (components in model order); ``progress`` gets one step per decision."""
    states: dict[float, State] = {t: CLEAN for t in thresholds}
    evaluator.prefix(CLEAN)
    for candidate in order:
        distinct = list(dict.fromkeys(states.values()))
        results = dict(zip(distinct, evaluator.extend([(s, candidate) for s in distinct])))
        for t in thresholds:
            value, grown = results[states[t]]
            if abs(value - clean) < t * abs(clean):
                states[t] = grown
        evaluator.forget_except(states.values())
        if progress is not None:
            progress(len(thresholds))
    evaluator.pinned |= set(states.values())  # the measures of each circuit start from its pruned state
    return {t: [c for c in evaluator.components if c not in states[t]] for t in thresholds}
