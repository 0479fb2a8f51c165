"""A task as each model of a pair sees it: plain data shared by ``compare`` and ``checkpoint``."""

from __future__ import annotations

from dataclasses import dataclass

from circuitdiff.tasks.base import Task
from circuitdiff.tasks.encode import EncodedTask


@dataclass
class PreparedTask:
    """One task as each model sees it (masked models get the masked variant)."""

    name: str
    teacher: tuple[Task, EncodedTask]
    student: tuple[Task, EncodedTask]
