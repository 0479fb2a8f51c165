"""Options of a comparison, checked on construction: plain data every layer may import.

Kept apart from ``compare`` (which loads models and runs everything) so that checkpointing
and the CLI can name the options without importing the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import TypeVar

from circuitdiff.analysis.circuits import SWEEP_THRESHOLDS
from circuitdiff.analysis.measures import measure_names
from circuitdiff.analysis.pair import MIN_PROMPTS
from circuitdiff.errors import CircuitDiffError
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.edge_methods import parse_edge_method
from circuitdiff.interventions.methods import Method
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET

E = TypeVar("E", bound=Enum)


class OptionsError(CircuitDiffError, ValueError):
    """A comparison option has an unknown name or an impossible value."""


def as_enum(kind: type[E], value: E | str, what: str) -> E:
    """``kind(value)`` for a name such as ``"zero"``; an unknown name lists the valid ones."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise OptionsError(f"unknown {what} {value!r}; choose one of {choices}") from None


MIN_BOOT = 10
"""Fewer bootstrap resamples cannot place a 95% interval's ends."""


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of a comparison; all of them are written into results.json.

    ``ablation`` and ``method`` take their names as strings too (``ablation="zero"``,
    ``method="attribution"``); every value is checked here, before any model is loaded.
    """

    ablation: Ablation = Ablation.MEAN
    n_prompts: int = 64
    seed: int = 0
    first_token: bool = False
    method: Method = Method.EXACT
    exact_top: int = 20
    n_boot: int = 1000
    circuits: bool = True
    circuit_thresholds: tuple[float, ...] = SWEEP_THRESHOLDS
    null_model: bool = True
    n_null: int = 10
    """Random students behind the chance level (``circuitdiff.null``); 0 switches it off like ``null_model``."""
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    edges: str = "none"
    """Edge effects: none | exact | eap | eap-ig (see ``circuitdiff.interventions.edge_methods``)."""
    measure: str = "linear_cka"
    """The similarity measure behind matching and the alignment score: any registered name (``analysis.measures``)."""
    control: str | None = None
    """A control model (name, folder, ``.gguf`` or Hub id) compared with the teacher beside the student
    (``circuitdiff.control``): the reference study's sanity floor, e.g. DistilBERT against GPT-2."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "ablation", as_enum(Ablation, self.ablation, "ablation"))
        set_(self, "method", as_enum(Method, self.method, "method"))
        set_(self, "edges", parse_edge_method(self.edges).value)
        set_(self, "measure", str(getattr(self.measure, "value", self.measure)))
        if self.measure not in (names := measure_names()):
            raise OptionsError(f"unknown similarity measure {self.measure!r}; choose one of {', '.join(names)}")
        try:
            set_(self, "circuit_thresholds", tuple(float(t) for t in self.circuit_thresholds))
        except (TypeError, ValueError):
            raise OptionsError(f"circuit_thresholds must be numbers, got {self.circuit_thresholds!r}") from None
        for name, low in (("n_prompts", MIN_PROMPTS), ("n_boot", MIN_BOOT), ("exact_top", 1), ("n_null", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionsError(f"{name} must be an integer >= {low}, got {value!r}")
        if any(not 0 < t < 1 for t in self.circuit_thresholds):
            raise OptionsError(f"circuit thresholds must lie strictly between 0 and 1, got {self.circuit_thresholds}")
        if isinstance(self.control, os.PathLike):
            set_(self, "control", os.fspath(self.control))
        if self.control is not None and (not isinstance(self.control, str) or not self.control.strip()):
            raise OptionsError(f"control must be a model name or path, got {self.control!r}")
        if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int):
            raise OptionsError(f"memory_budget must be a number of bytes (<= 0: automatic), got {self.memory_budget!r}")


def with_options(options: CompareOptions | None, **values: object) -> CompareOptions:
    """``options`` (default ``CompareOptions()``) with fields given by name; an unknown name is an ``OptionsError``."""
    names = [f.name for f in fields(CompareOptions)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise OptionsError(f"unknown option {', '.join(unknown)}; options are {', '.join(names)}")
    return replace(options or CompareOptions(), **values)  # type: ignore[arg-type]
