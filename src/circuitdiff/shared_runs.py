"""What a series of comparisons of one teacher with students of one architecture can share.

A trajectory compares one teacher with many checkpoints. The teacher's sweep, circuits and
activations on a task are the same every time, and so are the chance level's random
students (they depend on the student's architecture, never its weights); together they
were most of each comparison's cost. Something is reused only when nothing that decides it
changed: the same teacher object, the same architecture, the same options that reach the
computation, and tensor for tensor the same encoded prompts (a student's tokenizer can
drop items or shorten prompts for both sides).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from circuitdiff.analysis.calibration import NullDraw
from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.models.loading import LoadedModel
from circuitdiff.options import CompareOptions
from circuitdiff.tasks import EncodedTask

TEACHER_OPTIONS = ("ablation", "method", "seed", "first_token", "exact_top", "circuits", "circuit_thresholds",
                   "n_boot", "edges")
"""The ``CompareOptions`` fields a teacher's run depends on (the null, measure and control do not reach it)."""
NULL_OPTIONS = ("ablation", "seed", "first_token", "null_model", "n_null")
"""The fields the random students depend on."""


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


def _options(options: CompareOptions, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(options, name) for name in names)


def architecture(lm: LoadedModel) -> tuple[Any, ...]:
    """What a random student is drawn from: the model class, its config (not where it was loaded from), dtype, device."""
    config = {k: v for k, v in lm.model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    dtype = next(lm.model.parameters()).dtype
    return type(lm.model).__name__, repr(sorted(config.items())), str(dtype), str(lm.device)


Kept = tuple[tuple[Any, ...], EncodedTask, Any]
"""What decided a stored result, the prompts it was made on, and the result."""


def _take(store: dict[str, Kept], task: str, key: tuple[Any, ...], encoded: EncodedTask) -> Any:
    kept = store.get(task)
    if kept is None or kept[0] != key or not same_encoding(kept[1], encoded):
        return None
    return kept[2]


@dataclass
class SharedRuns:
    """The teacher's task runs and the random students' draws, by task; ``reused`` counts what it saved."""

    teacher: LoadedModel
    teacher_runs: dict[str, Kept] = field(default_factory=dict)
    null_draws: dict[str, Kept] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=lambda: {"teacher": 0, "null": 0})

    def teacher_run(self, teacher: LoadedModel, task: str, encoded: EncodedTask,
                    options: CompareOptions) -> ModelTaskRun | None:
        if teacher is not self.teacher:
            return None
        run = _take(self.teacher_runs, task, _options(options, TEACHER_OPTIONS), encoded)
        self.reused["teacher"] += run is not None
        return run

    def keep_teacher_run(self, teacher: LoadedModel, task: str, encoded: EncodedTask, options: CompareOptions,
                         run: ModelTaskRun) -> None:
        if teacher is self.teacher:
            self.teacher_runs[task] = (_options(options, TEACHER_OPTIONS), encoded, run)

    def null(self, student: LoadedModel, task: str, encoded: EncodedTask, options: CompareOptions
             ) -> list[NullDraw] | None:
        draws = _take(self.null_draws, task, _null_key(student, options), encoded)
        self.reused["null"] += draws is not None
        return draws

    def keep_null(self, student: LoadedModel, task: str, encoded: EncodedTask, options: CompareOptions,
                  draws: list[NullDraw]) -> None:
        self.null_draws[task] = (_null_key(student, options), encoded, draws)


def _null_key(student: LoadedModel, options: CompareOptions) -> tuple[Any, ...]:
    return architecture(student), _options(options, NULL_OPTIONS)
