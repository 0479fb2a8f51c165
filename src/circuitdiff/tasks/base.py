"""Task data: plain prompts with an answer and a distractor, tokeniser-agnostic.

Each model tokenises the text itself (see ``encode.py``), so teacher and student may
use different tokenisers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

MASK = "{mask}"
"""Placeholder for the answer slot in masked-LM prompts; replaced by the tokenizer's mask token."""


@dataclass(frozen=True)
class TaskPrompt:
    """One item: the model should prefer ``answer`` over ``distractor`` after ``prompt``.

    Answers carry their leading space (" Mary") as they would follow the prompt in text.
    In a masked task the prompt contains ``MASK`` where the answer goes.
    """

    prompt: str
    answer: str
    distractor: str
    corrupted_prompt: str | None = None
    template: str | None = None
    """Which template the prompt was filled from. Mean and resample ablation replace an
    activation only with activations of prompts of the same template (and token length),
    so position i always means the same slot of the sentence."""
    roles: tuple[tuple[str, str, int], ...] = field(default=(), compare=False)
    """Token roles for the attention analysis: (role, word as written in the prompt, which
    occurrence of it, from 0), e.g. ("S2", "John", 1); each model finds the token itself."""


@dataclass(frozen=True)
class Task:
    """A named, fixed list of prompts (built-in tasks are generated from a seed)."""

    name: str
    prompts: tuple[TaskPrompt, ...]
    masked: bool = False
    description: str = ""
    source_lines: tuple[int, ...] | None = field(default=None, compare=False)
    """For tasks read from a file: the 1-based line number of each prompt, for error messages."""
    drop_multi_token: bool = False
    """Items whose answer or distractor a model's tokenizer splits are dropped (and counted)
    rather than refused: for tasks whose answers are words of an open vocabulary (``facts``),
    where no word list can be one token for every tokenizer. ``first_token`` keeps them."""

    def select(self, indices: Sequence[int]) -> Task:
        """The same task with only the prompts at ``indices`` (in that order)."""
        lines = None if self.source_lines is None else tuple(self.source_lines[i] for i in indices)
        return replace(self, prompts=tuple(self.prompts[i] for i in indices), source_lines=lines)

    @property
    def has_corrupted(self) -> bool:
        return all(p.corrupted_prompt is not None for p in self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)
