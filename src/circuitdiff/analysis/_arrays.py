"""Input checks shared by the analysis functions: float64, finite, and "dead" detection.

Similarity with a constant representation is 0/0. We return 0.0 and say so with a
``DegenerateRepresentationWarning`` instead of letting a NaN reach a matching or a report.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray

from circuitdiff.errors import NumericalError

Float64Array = NDArray[np.float64]

DEGENERATE_RTOL = 1e-7
"""A representation whose per-column spread is below this fraction of its magnitude is dead.

1e-7 is about float32 resolution: activations that vary only by rounding carry no signal.
"""


class DegenerateRepresentationWarning(UserWarning):
    """A representation is constant over prompts (a dead component); its similarity was set to 0."""


class SmallSampleWarning(UserWarning):
    """CCA is asked to compare more directions than the prompts can support; values are inflated."""


def as_matrix(x: ArrayLike, name: str = "X") -> Float64Array:
    """Return ``x`` as a finite float64 (n, d) matrix (a vector becomes one column)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (n, d) matrix, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise NumericalError(f"{name} contains NaN or infinite values")
    return a


def same_rows(x: Float64Array, y: Float64Array) -> None:
    """Raise unless both representations describe the same prompts (same n)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows (prompts): {x.shape[0]} != {y.shape[0]}")


def centre(x: Float64Array) -> Float64Array:
    """Subtract the column means (the mean over prompts)."""
    return x - x.mean(axis=0, keepdims=True)


def is_degenerate(x: ArrayLike, rtol: float = DEGENERATE_RTOL) -> bool:
    """True when ``x`` is constant over its rows (prompts) up to ``rtol`` of its magnitude.

    Such a component is dead for every similarity measure here: they all return 0.0 for it.
    """
    a = as_matrix(x)
    scale = float(np.max(np.abs(a)))
    if scale == 0.0:
        return True
    return float(np.max(np.ptp(a, axis=0))) <= rtol * scale


def warn_degenerate(what: str) -> None:
    """Record that a similarity was set to 0 because an input was constant."""
    warnings.warn(
        f"{what}: a representation is constant over prompts (dead component); similarity set to 0.0",
        DegenerateRepresentationWarning,
        stacklevel=3,
    )
