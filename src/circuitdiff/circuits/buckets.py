"""Circuit evaluation over prompts bucketed by width: less padding, the same mean metric.

A ``CircuitEvaluator`` runs every prompt at the widest prompt's width (the positions the
metric depends on): 14% of the block work is padding on IOI prompts, 24-30% on
``successor`` and ``facts``. The node sweep buckets prompts by width; a circuit search can
too, once each bucket alone fills a matrix multiply (``MIN_BUCKET_TOKENS``): one evaluator
per bucket, every call made on all of them, and each set's mean metric the prompt-weighted
mean of the buckets' means. States, prefixes and memos stay per bucket and move together,
so every search (pruning, the curve, completeness) runs unchanged on either kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from circuitdiff.circuits.evaluation import CircuitEvaluator, State
from circuitdiff.interventions.ablation import Replacement
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, MIN_PASS_TOKENS, prompt_chunks
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.prefix import needed_width
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

MIN_BUCKET_TOKENS = MIN_PASS_TOKENS // 2
"""Rows (prompts x positions) a bucket needs on its own: 256, the smallest pass measured at full matrix-multiply
speed on the CI machine (61-68 GFLOP/s from 256 rows up, one core; 48 at 128)."""


def circuit_evaluator(adapter: Adapter, base: Batch, replacement: Replacement,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET) -> CircuitEvaluator | BucketedEvaluator:
    """One evaluator over all prompts, or one per width bucket where each bucket fills a pass alone."""
    widths = needed_width(adapter, base).cpu()
    min_prompts = -(-MIN_BUCKET_TOKENS // max(1, int(widths.float().mean())))
    buckets = prompt_chunks(widths, len(base), min_prompts)
    if len(buckets) == 1:
        return CircuitEvaluator(adapter, base, replacement, memory_budget)
    parts = [CircuitEvaluator(adapter, base.select(rows.to(base.input_ids.device)), replacement, memory_budget,
                              prompts=rows) for rows in buckets]
    return BucketedEvaluator(parts)


class BucketedEvaluator:
    """``CircuitEvaluator``'s interface over several evaluators of disjoint prompts."""

    def __init__(self, parts: Sequence[CircuitEvaluator]) -> None:
        self.parts = list(parts)
        self.components = self.parts[0].components
        self.n = sum(p.n for p in self.parts)
        self.weights = torch.tensor([p.n for p in self.parts], dtype=torch.float64) / self.n
        self.max_variants = min(p.max_variants for p in self.parts)
        width = max(p.width for p in self.parts)  # speculate as one evaluator of all prompts would: the same walk
        self.efficient_variants = max(1, min(self.max_variants, MIN_PASS_TOKENS // (self.n * width)))

    def _mean(self, values: Iterable[float]) -> float:
        return float((torch.tensor(list(values), dtype=torch.float64) * self.weights).sum())

    @property
    def pinned(self) -> set[State]:
        return self.parts[0].pinned

    @pinned.setter
    def pinned(self, states: set[State]) -> None:
        for p in self.parts:
            p.pinned = set(states)

    @property
    def passes(self) -> int:
        return sum(p.passes for p in self.parts)

    @property
    def block_tokens(self) -> int:
        return sum(p.block_tokens for p in self.parts)

    def prefix(self, state: State) -> None:
        """Records (clean) or checks every bucket's prefix of ``state``."""
        for p in self.parts:
            p.prefix(state)

    def forget_except(self, keep: Iterable[State]) -> None:
        keep = list(keep)
        for p in self.parts:
            p.forget_except(keep)

    def known(self, ablated: State) -> float | None:
        values = [p.known(ablated) for p in self.parts]
        return None if any(v is None for v in values) else self._mean(values)  # type: ignore[arg-type]

    def cached_base(self, ablated: State) -> State:
        bases = {p.cached_base(ablated) for p in self.parts}
        if len(bases) != 1:
            raise RuntimeError("buckets hold different states; every call must reach all of them")
        return bases.pop()

    def ablated(self, sets: Sequence[Iterable[Component]]) -> list[float]:
        sets = [frozenset(s) for s in sets]
        return [self._mean(v) for v in zip(*(p.ablated(sets) for p in self.parts))]

    def kept(self, sets: Sequence[Iterable[Component]]) -> list[float]:
        sets = [frozenset(s) for s in sets]
        return [self._mean(v) for v in zip(*(p.kept(sets) for p in self.parts))]

    def extend(self, steps: Sequence[tuple[State, Component | Iterable[Component]]]) -> list[tuple[float, State]]:
        steps = [(state, c if isinstance(c, Component) else frozenset(c)) for state, c in steps]
        per_part = [p.extend(steps) for p in self.parts]
        return [(self._mean(v for v, _ in results), results[0][1]) for results in zip(*per_part)]


Evaluator = CircuitEvaluator | BucketedEvaluator
"""What the searches (pruning, the curve, completeness) run on."""
