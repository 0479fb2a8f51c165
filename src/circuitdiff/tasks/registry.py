"""Built-in task registry and ``get_task``: a built-in name or a JSONL file path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from circuitdiff.errors import TaskFileError
from circuitdiff.tasks import facts, greater_than, induction, ioi, numerals, successor
from circuitdiff.tasks._common import TRAIN_SEED_OFFSET, check_n_prompts
from circuitdiff.tasks.base import Task
from circuitdiff.tasks.jsonl import load_jsonl_task

DEFAULT_N_PROMPTS = 64


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: a deterministic generator plus what it needs to be documented."""

    name: str
    description: str
    generate: Callable[[int, int, bool], Task]
    """generate(n_prompts, seed, masked) -> Task; same (n, seed) gives the same prompts."""
    supports_masked: bool
    vocabulary: tuple[str, ...] = ()
    """The words it fills templates with (names, numbers, ...), without leading spaces."""


_SPECS = (
    TaskSpec("ioi", "indirect object identification (Wang et al. 2022): "
             "'When Mary and John went to the store, John gave a drink to' -> ' Mary' vs ' John'",
             ioi.generate, True, ioi.VOCABULARY),
    TaskSpec("numerals", "numeral sequence continuation: 'Van done in 1. ... Desk done in 4. "
             "Sun done in' -> ' 5' vs ' 4' (done/lost/born templates)",
             numerals.generate, True, numerals.vocabulary("digits")),
    TaskSpec("numerals-words",
             "numerals with number words: '... done in four. Sun done in' -> ' five' vs ' four'",
             numerals.generate_words, True, numerals.vocabulary("words")),
    TaskSpec("numerals-months",
             "numerals with months: '... done in April. Sun done in' -> ' May' vs ' April'",
             numerals.generate_months, True, numerals.vocabulary("months")),
    TaskSpec("greater-than", "greater-than (Hanna et al. 2023): 'The war lasted from the year 1732 "
             "to the year 17' -> '45' vs '21' (masked: whole years ' 1745' vs ' 1721')",
             greater_than.generate, True, greater_than.VOCABULARY),
    TaskSpec("successor", "successor: 'Monday, Tuesday, Wednesday,' -> ' Thursday' vs ' Wednesday' "
             "(weekdays, months, number words)",
             successor.generate, True, successor.VOCABULARY),
    TaskSpec("induction", "induction: a random word sequence repeated; finish the repeat",
             induction.generate, True, induction.VOCABULARY),
    TaskSpec("facts", "factual recall (the study's third task): 'The capital of France is' -> ' Paris' "
             f"vs ' Madrid'; {len(facts.FACTS)} facts in {len(facts.RELATIONS)} relations; items a tokenizer "
             "splits are dropped",
             facts.generate, True, facts.VOCABULARY),
)

BUILTIN_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}


def _spec(name: str) -> TaskSpec:
    try:
        return BUILTIN_TASKS[name]
    except KeyError:
        raise TaskFileError(f"unknown task '{name}': not a built-in "
                            f"({', '.join(BUILTIN_TASKS)}) nor an existing file") from None


def task_vocabulary(name: str) -> list[str]:
    """The fill-in words a built-in task uses, e.g. for a tiny model's training vocabulary."""
    return list(dict.fromkeys(_spec(name).vocabulary))


def get_task(name_or_path: str | Path, n_prompts: int | None = None, seed: int = 0,
             masked: bool = False) -> Task:
    """A built-in task by name, or a JSONL task file by path.

    ``n_prompts``: built-ins generate this many (default 64); files keep their first
    ``n_prompts`` lines (default: all; a larger n is not an error). A built-in name wins
    over a file of the same name. For files the file decides ``masked`` ({mask} prompts);
    ``masked=True`` with a causal file is an error.
    """
    key = str(name_or_path)
    if key in BUILTIN_TASKS:
        spec = BUILTIN_TASKS[key]
        if masked and not spec.supports_masked:
            raise TaskFileError(f"task '{key}' has no masked variant")
        n = DEFAULT_N_PROMPTS if n_prompts is None else check_n_prompts(n_prompts)
        return spec.generate(n, seed, masked)
    path = Path(key).expanduser()
    if not path.is_file():
        if path.exists():
            raise TaskFileError(f"task path '{key}' is not a file")
        if path.suffix or len(path.parts) > 1:  # looks like a path, not a task name
            raise TaskFileError(f"task file '{key}' not found (built-in tasks: {', '.join(BUILTIN_TASKS)})")
        _spec(key)  # raises, listing the built-ins
    task = load_jsonl_task(path, n_prompts)
    if masked and not task.masked:
        raise TaskFileError(f"task file '{key}' has no {{mask}} prompts but a masked task was asked for")
    return task


def training_prompts(name: str, n_prompts: int, seed: int = 0, masked: bool = False) -> Task:
    """Prompts from a seed stream that evaluation seeds (< 1e9) never use, for training data.

    Individual prompts can still coincide with evaluation prompts when a task has few
    distinct items (successor, numerals-months): deduplicate against them if that matters.
    """
    spec = _spec(name)
    if masked and not spec.supports_masked:
        raise TaskFileError(f"task '{name}' has no masked variant")
    return spec.generate(check_n_prompts(n_prompts), seed + TRAIN_SEED_OFFSET, masked)
