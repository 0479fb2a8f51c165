"""The teacher's task runs, kept for the next comparison against the same teacher.

A trajectory compares one teacher with many checkpoints; the teacher's sweep, circuits and
activations on a task are the same every time, and they were most of each comparison's
cost. A run is reused only when nothing that decides it changed: the same ``LoadedModel``
object, the same options that reach ``run_model_on_task``, and tensor for tensor the same
encoded prompts (a student's tokenizer can drop items or shorten prompts for both sides).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.models.loading import LoadedModel
from circuitdiff.options import CompareOptions
from circuitdiff.tasks import EncodedTask

RUN_OPTIONS = ("ablation", "method", "seed", "first_token", "exact_top", "circuits", "circuit_thresholds", "n_boot",
               "edges")
"""The ``CompareOptions`` fields a teacher's run depends on (the null, measure and control do not reach it)."""


def same_encoding(a: EncodedTask, b: EncodedTask) -> bool:
    """Every field equal, tensors element by element (``==`` on tensors is not a truth value)."""
    for f in fields(EncodedTask):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
                    and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _options_key(options: CompareOptions) -> tuple[Any, ...]:
    return tuple(getattr(options, name) for name in RUN_OPTIONS)


@dataclass
class TeacherRuns:
    """Runs of one teacher, by task name; ``reused`` counts the runs it saved."""

    teacher: LoadedModel
    runs: dict[str, tuple[tuple[Any, ...], EncodedTask, ModelTaskRun]] = field(default_factory=dict)
    reused: int = 0

    def get(self, teacher: LoadedModel, task: str, encoded: EncodedTask, options: CompareOptions) -> ModelTaskRun | None:
        kept = self.runs.get(task)
        if teacher is not self.teacher or kept is None:
            return None
        key, kept_encoding, run = kept
        if key != _options_key(options) or not same_encoding(kept_encoding, encoded):
            return None
        self.reused += 1
        return run

    def put(self, teacher: LoadedModel, task: str, encoded: EncodedTask, options: CompareOptions,
            run: ModelTaskRun) -> None:
        if teacher is self.teacher:
            self.runs[task] = (_options_key(options), encoded, run)
