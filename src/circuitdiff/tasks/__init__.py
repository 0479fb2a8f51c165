"""Tasks: built-in generators, JSONL task files, and encoding for a tokenizer.

    task = get_task("ioi", n_prompts=64, seed=0)           # or get_task("my_task.jsonl")
    enc = encode_task(task, tokenizer)                      # padded tensors + answer ids
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circuitdiff.tasks.base import MASK, Task, TaskPrompt
from circuitdiff.tasks.jsonl import load_jsonl_task
from circuitdiff.tasks.registry import (
    BUILTIN_TASKS,
    DEFAULT_N_PROMPTS,
    TaskSpec,
    get_task,
    task_vocabulary,
    training_prompts,
)

__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_N_PROMPTS",
    "MASK",
    "EncodedTask",
    "Task",
    "TaskPrompt",
    "TaskSpec",
    "encode_task",
    "get_task",
    "load_jsonl_task",
    "task_vocabulary",
    "training_prompts",
]

if TYPE_CHECKING:
    from circuitdiff.tasks.encode import EncodedTask, encode_task


def __getattr__(name: str) -> Any:
    """Encoding needs torch; it is imported on first use so that listing tasks stays instant."""
    if name in ("EncodedTask", "encode_task"):
        from circuitdiff.tasks import encode

        return getattr(encode, name)
    raise AttributeError(f"module 'circuitdiff.tasks' has no attribute {name!r}")
