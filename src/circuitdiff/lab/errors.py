"""Lab-specific user errors: each is a ``CircuitDiffError`` so the CLI prints one line."""

from __future__ import annotations

from circuitdiff.errors import CircuitDiffError


class LabError(CircuitDiffError):
    """A training or distillation request that cannot be carried out as given."""


class CorpusError(LabError):
    """The training text could not be found or read."""


class CheckpointError(LabError):
    """A checkpoint or teacher folder is missing, incomplete or does not match the recipe."""
