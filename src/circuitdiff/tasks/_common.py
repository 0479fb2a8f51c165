"""Small helpers shared by the built-in generators (seeding, argument checks, mask slot)."""

from __future__ import annotations

import random

from circuitdiff.errors import TaskFileError
from circuitdiff.tasks.base import MASK

TRAIN_SEED_OFFSET = 1_000_000_007
"""``training_prompts`` draws from seed + this, a stream that evaluation seeds never reach."""


def rng_for(task: str, seed: int) -> random.Random:
    """A generator private to (task, seed): tasks with the same seed do not share draws.

    A string seed is hashed with SHA-512 by ``random``, so this is stable across runs and
    Python versions (unlike ``hash()``), and negative seeds stay distinct from positive ones.
    """
    return random.Random(f"circuitdiff:{task}:{int(seed)}")


def check_n_prompts(n_prompts: int) -> int:
    """Reject a non-positive prompt count with a user-facing error, not a deep crash."""
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise TaskFileError(f"n_prompts must be a positive integer, got {n_prompts!r}")
    return n_prompts


def slot(masked: bool, tail: str = ".") -> str:
    """The end of a prompt: nothing for causal LMs, " {mask}<tail>" for masked LMs."""
    return f" {MASK}{tail}" if masked else ""


def sp(word: str) -> str:
    """Answers carry the leading space they have in running text."""
    return " " + word
