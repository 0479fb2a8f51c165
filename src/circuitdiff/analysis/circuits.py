"""Circuits as plain data, and their comparison: no model runs here.

Discovery (which runs models) lives in ``circuitdiff.circuits``; it returns these records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

DEFAULT_THRESHOLD = 0.2
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Circuit:
    """The minimal circuit at one threshold and the measures of it that pruning does not fix.

    ``faithfulness`` (metric with only the circuit kept, over clean, under the run's ablation)
    lies in [1 - T, 1 + T] by construction of the pruning; ``faithfulness_other`` is the same
    under the other ablation type and is not constrained. ``completeness_gap`` is Wang et al.
    (2022)'s incompleteness max_K |F(C \\ K) - F(M \\ K)| over the sampled subsets K of the
    circuit, in units of |clean| (0 is complete). ``necessity`` = 1 - F(M \\ C) / clean, the
    share of the behaviour lost when only the circuit is ablated.
    """

    threshold: float
    components: list[str]
    size: int
    faithfulness: float
    faithfulness_other: float | None = None
    other_ablation: str | None = None
    completeness_gap: float | None = None
    completeness_worst_k: list[str] = field(default_factory=list)
    completeness_n_subsets: int = 0
    completeness_greedy_gap: float | None = None
    necessity: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CircuitCurve:
    """Mean metric with only the ``size`` most influential components kept (the rest ablated at once).

    Every point is an exactly evaluated forward pass; size 0 is the fully ablated model and
    size = all components is the clean model. ``order`` lists components most influential first.
    """

    sizes: list[int]
    metric: list[float]
    clean: float
    order: list[str]

    @property
    def fraction(self) -> list[float]:
        return [m / self.clean if self.clean else float("nan") for m in self.metric]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "fraction_of_clean": self.fraction}


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
