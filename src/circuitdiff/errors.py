"""User-facing errors: the CLI prints these as one line and exits non-zero.

Anything that is not a ``CircuitDiffError`` is a bug in circuitdiff and keeps its traceback.
"""

from __future__ import annotations


class CircuitDiffError(Exception):
    """Base class for problems with the user's input or environment."""


class ModelLoadError(CircuitDiffError):
    """A model or tokenizer could not be found or loaded safely."""


class UnsupportedArchitectureError(CircuitDiffError):
    """No adapter knows the model's architecture."""


class TaskFileError(CircuitDiffError):
    """A task name is unknown or a task file is malformed."""


class TaskEncodingError(CircuitDiffError):
    """A task cannot be tokenised for a model (e.g. a multi-token answer)."""


class EdgesUnsupportedError(CircuitDiffError):
    """Edges are not defined for a model family (e.g. post-LayerNorm BERT); the message says why."""


class NumericalError(CircuitDiffError):
    """A metric became NaN or infinite."""
