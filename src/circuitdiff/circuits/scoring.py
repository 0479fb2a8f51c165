"""Scoring and ordering: which candidates a search tries, and in what order.

Scores only order candidates; they never decide whether a circuit is faithful (every
decision is an exact evaluation, see ``evaluation.py``). Ties keep the model's component
order, so the order is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from circuitdiff.models.components import Component


def pruning_order(components: Sequence[Component], effects: Sequence[float]) -> list[Component]:
    """Least influential first (by |single-ablation effect|): the order iterative pruning visits."""
    if len(components) != len(effects):
        raise ValueError(f"{len(components)} components but {len(effects)} effects")
    return [components[i] for i in sorted(range(len(components)), key=lambda i: abs(effects[i]))]


def influence_order(components: Sequence[Component], effects: Sequence[float]) -> list[Component]:
    """Most influential first: the order in which the metric curve adds components back."""
    if len(components) != len(effects):
        raise ValueError(f"{len(components)} components but {len(effects)} effects")
    return [components[i] for i in sorted(range(len(components)), key=lambda i: -abs(effects[i]))]
