"""Edge scoring for one model on one task: which method, and how the estimates compare with exact.

``--edges exact`` patches every edge exactly and also scores EAP and EAP-IG (a few
forward-and-backward passes), reporting their Spearman rank correlation with the exact
effects; ``eap`` and ``eap-ig`` score only by gradients (for models where exact
patching of every edge is too slow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from circuitdiff.errors import CircuitDiffError
from circuitdiff.interventions.ablation import ActivationCache, Replacement
from circuitdiff.interventions.eap import DEFAULT_IG_STEPS, eap_scores
from circuitdiff.interventions.edge_circuits import (THRESHOLDS, TOP_K, EdgeCircuit, evaluate_edge_circuit,
                                                      select_threshold, select_top_k)
from circuitdiff.interventions.edges import Edge, all_edges, exact_edge_metrics, receiver_name
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.graph import check_edges_supported
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET
from circuitdiff.models.adapters.base import Adapter


class EdgeMethod(str, Enum):
    NONE = "none"
    EXACT = "exact"
    EAP = "eap"
    EAP_IG = "eap-ig"


def parse_edge_method(value: str) -> EdgeMethod:
    try:
        return EdgeMethod(value)
    except ValueError:
        raise CircuitDiffError(f"unknown edge method '{value}'; choose one of "
                               f"{', '.join(m.value for m in EdgeMethod)}") from None


def check_edge_support(adapter: Adapter, method: EdgeMethod, model_name: str) -> None:
    """One-line usage error, before any forward pass, for a family that refuses edges."""
    if method is not EdgeMethod.NONE:
        check_edges_supported(adapter, f"--edges {method.value} for model '{model_name}': ")


@dataclass
class EdgeScores:
    """Mean effect (metric with the edge ablated minus base) per edge, for each method run."""

    edges: list[Edge]
    grouped_query: bool
    effects: dict[str, np.ndarray] = field(default_factory=dict)
    spearman: dict[str, float] = field(default_factory=dict)
    """Rank correlation of each gradient method with the exact effects (exact runs only)."""
    circuits: list[EdgeCircuit] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        rows = []
        for method, values in self.effects.items():
            for edge, value in zip(self.edges, values):
                rows.append({"sender": edge.sender.name, "receiver": receiver_name(edge.receiver, self.grouped_query),
                             "channel": edge.channel, "effect": float(value), "method": method})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"n_edges": len(self.edges), "methods": list(self.effects), "spearman_vs_exact": self.spearman,
                "circuits": [c.to_json() for c in self.circuits], "records": self.records()}


def score_edges(
    adapter: Adapter,
    base: Batch,
    base_cache: ActivationCache,
    replacement: Replacement,
    method: EdgeMethod,
    *,
    ig_steps: int = DEFAULT_IG_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    base_metric: np.ndarray,
    circuits: bool = True,
    progress: Callable[[float], None] | None = None,
) -> EdgeScores:
    """Every edge's effect by ``method`` (exact also runs both gradient methods for comparison),
    then with ``circuits`` the edge circuits selected by ``method``'s scores, each run for its faithfulness."""
    edges = all_edges(adapter)
    scores = EdgeScores(edges, adapter.grouped_query_attention)
    if method is EdgeMethod.EXACT:
        patched = exact_edge_metrics(adapter, base, base_cache, replacement, edges, memory_budget=memory_budget,
                                     progress=progress).double().numpy()
        scores.effects["exact"] = (patched - base_metric[None, :]).mean(1)
    for name, steps in (("eap", 0), ("eap-ig", ig_steps)):
        if method in (EdgeMethod.EXACT, EdgeMethod(name)):
            estimate = eap_scores(adapter, base, base_cache, replacement, edges, ig_steps=steps, memory_budget=memory_budget)
            scores.effects[name] = estimate.double().mean(1).numpy()
            if "exact" in scores.effects:
                scores.spearman[name] = float(spearmanr(scores.effects["exact"], scores.effects[name]).statistic)
    if circuits:
        clean = float(base_metric.mean())
        values = scores.effects[method.value]
        rules = [("top-k", float(k), select_top_k(values, k)) for k in TOP_K]
        rules += [("threshold", t, select_threshold(values, t, clean)) for t in THRESHOLDS]
        scores.circuits = [evaluate_edge_circuit(adapter, base, base_cache, replacement, edges, keep, clean,
                                                 method=method.value, rule=rule, parameter=p, memory_budget=memory_budget)
                           for rule, p, keep in rules]
    return scores


def base_cache_for(clean: ActivationCache, corrupted: ActivationCache | None, base_is_corrupted: bool) -> ActivationCache:
    """The activations of the run the metric is read on (the corrupted one for denoising)."""
    if base_is_corrupted:
        assert corrupted is not None
        return corrupted
    return clean

