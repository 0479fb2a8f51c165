"""Similarity measures as plug-ins: each module here defines one ``Measure`` and registers it.

Why a protocol: a measure prepares each component once (a Gram matrix, a subspace
basis) and then compares prepared components, so a teacher x student matrix costs one
preparation per component, not per pair. Every module in this package is imported on
first use, so a new measure is one new file here; ``similarity_matrix`` and
``SimilarityMeasure`` pick it up by its ``name``, ``CompareOptions.measure`` and the
CLI's ``--measure`` accept it, and it drives matching and the alignment score.

**Prompt weights.** The alignment interval resamples prompts. A measure whose estimator
takes per-prompt weights sets ``prompt_weights = True`` and provides ``prepare_weighted``
and ``compare_weighted`` (``WeightedMeasure``; linear CKA does, through its zero-diagonal
Gram matrices): each resample is then the same estimator as the point, with prompts
counted as often as drawn. Any other measure is recomputed on each resample's distinct
prompts (``analysis.calibration``), and results.json says so in a note.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from circuitdiff.analysis._arrays import Float64Array


@runtime_checkable
class Measure(Protocol):
    """Similarity of two components' (n_prompts, width) activations, on the same prompts."""

    name: ClassVar[str]
    description: ClassVar[str]

    def prepare(self, x: Float64Array) -> Any:
        """Everything the comparisons need from one component (``x`` may be constant: then it compares as 0)."""

    def compare_all(self, teacher: Sequence[Any], student: Sequence[Any]) -> Float64Array:
        """(len(teacher), len(student)) similarities of prepared components."""


@runtime_checkable
class WeightedMeasure(Measure, Protocol):
    """A measure whose estimator weights prompts (a bootstrap resample: how often each was drawn)."""

    prompt_weights: ClassVar[bool]

    def prepare_weighted(self, x: Float64Array) -> Any:
        """What ``compare_weighted`` needs from one component, computed once for all resamples."""

    def compare_weighted(self, teacher: Any, student: Any, weights: Float64Array) -> Float64Array:
        """(teacher, student) similarities with prompt ``weights``; ``teacher``/``student``: stacked prepared."""


def takes_prompt_weights(measure: Measure) -> bool:
    """Whether ``measure`` declares a prompt-weighted estimator (``WeightedMeasure``)."""
    return bool(getattr(measure, "prompt_weights", False))


class PairwiseMeasure(ABC):
    """Base for measures whose matrix is just every pair compared (subclasses define ``compare``)."""

    name: ClassVar[str]
    description: ClassVar[str]

    def prepare(self, x: Float64Array) -> Any:
        return x

    @abstractmethod
    def compare(self, a: Any, b: Any) -> float:
        """Similarity of two prepared components."""

    def compare_all(self, teacher: Sequence[Any], student: Sequence[Any]) -> Float64Array:
        return np.array([[self.compare(a, b) for b in student] for a in teacher], dtype=np.float64).reshape(
            len(teacher), len(student))


_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a measure available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two similarity measures are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def measure_names() -> list[str]:
    """Registered measure names, built-ins first in the order of their files."""
    _discover()
    return list(_REGISTRY)


def measure_classes() -> dict[str, type]:
    _discover()
    return dict(_REGISTRY)


def get_measure(name: str, **settings: Any) -> Measure:
    """The measure called ``name``, configured with those ``settings`` it has fields for (others ignored)."""
    classes = measure_classes()
    if str(name) not in classes:
        raise ValueError(f"unknown similarity measure {name!r}; choose one of {', '.join(classes)}")
    cls = classes[str(name)]
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{k: v for k, v in settings.items() if k in fields and v is not None})
