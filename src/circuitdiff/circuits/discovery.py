"""Node circuits of one model on one task: prune at every threshold, then measure each circuit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from circuitdiff.analysis.circuits import DEFAULT_THRESHOLD, Circuit, CircuitCurve
from circuitdiff.circuits.buckets import Evaluator, circuit_evaluator
from circuitdiff.circuits.measures import GREEDY_BUDGET, N_SUBSETS, completeness, metric_curve
from circuitdiff.circuits.pruning import prune_thresholds
from circuitdiff.circuits.scoring import influence_order, pruning_order
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component


def other_ablation(ablation: Ablation) -> Ablation | None:
    """The ablation a circuit is cross-checked under: zero for mean, mean for zero/resample/noising.

    None for denoising, whose base run is the corrupted prompt (a circuit there restores
    behaviour rather than keeping it, and no second ablation type answers the same question).
    """
    if ablation is Ablation.MEAN:
        return Ablation.ZERO
    if ablation in (Ablation.ZERO, Ablation.RESAMPLE, Ablation.NOISING):
        return Ablation.MEAN
    return None


@dataclass(frozen=True)
class Discovery:
    circuits: list[Circuit]
    curve: CircuitCurve


def discover(
    adapter: Adapter,
    base: Batch,
    replacement: Replacement,
    effects: Sequence[float],
    clean: float,
    thresholds: Sequence[float] = (DEFAULT_THRESHOLD,),
    progress: Callable[[float], None] | None = None,
    *,
    other: Replacement | None = None,
    seed: int = 0,
    n_subsets: int = N_SUBSETS,
    greedy_budget: int = GREEDY_BUDGET,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Discovery:
    """Circuits at every threshold from one shared pruning pass, each measured; plus the metric curve.

    ``effects`` (single-ablation, one per component in model order) only order the candidates.
    ``other`` replaces components for the cross-check under the other ablation type;
    ``n_subsets`` and ``greedy_budget`` set Wang et al.'s completeness search (see ``measures``).
    ``progress`` is told of each decision (components x thresholds in all).
    """
    components = adapter.components()
    with fast_kernels(adapter):
        evaluator = circuit_evaluator(adapter, base, replacement, memory_budget)
        kept = prune_thresholds(evaluator, pruning_order(components, effects), clean, thresholds, progress)
        curve = metric_curve(evaluator, influence_order(components, effects), clean)
        cross = circuit_evaluator(adapter, base, other, memory_budget) if other is not None else None
        circuits = [_measure(evaluator, cross, other, kept[t], clean, t, seed, n_subsets, greedy_budget) for t in thresholds]
    return Discovery(circuits, curve)


def _measure(evaluator: Evaluator, cross: Evaluator | None, other: Replacement | None,
             circuit: list[Component], clean: float, threshold: float, seed: int, n_subsets: int,
             greedy_budget: int) -> Circuit:
    denom = clean if clean != 0 else float("nan")
    [own] = evaluator.kept([circuit])
    [without] = evaluator.ablated([circuit])
    wang = completeness(evaluator, circuit, clean, n_subsets=n_subsets, seed=seed, greedy_budget=greedy_budget)
    return Circuit(
        threshold=threshold,
        components=[c.name for c in circuit],
        size=len(circuit),
        faithfulness=own / denom,
        faithfulness_other=cross.kept([circuit])[0] / denom if cross is not None else None,
        other_ablation=other.ablation.value if other is not None else None,
        completeness_gap=wang.gap,
        completeness_worst_k=wang.worst_k,
        completeness_n_subsets=wang.n_subsets,
        completeness_greedy_gap=wang.greedy_gap,
        necessity=1.0 - without / denom,
    )
