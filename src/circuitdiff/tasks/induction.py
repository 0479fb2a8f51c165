"""Induction: a random word sequence, repeated; finish the repeat.

"apple river chair ... tiger apple river" -> " chair" (the word that followed "river"
the first time), distractor: another word of the sequence. Corrupted prompts replace the
repeat with fresh words, so there is nothing to copy; lengths stay the same.
"""

from __future__ import annotations

from circuitdiff.tasks._common import check_n_prompts, rng_for, slot, sp
from circuitdiff.tasks.base import Task, TaskPrompt
from circuitdiff.tasks.vocab import COMMON_WORDS

SEQ_LEN = 8
"""Words in the first occurrence; the repeat shows 1..SEQ_LEN-1 of them."""

VOCABULARY: tuple[str, ...] = COMMON_WORDS


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Induction prompts over distinct words, so the right continuation is unambiguous."""
    check_n_prompts(n_prompts)
    rng = rng_for("induction", seed)
    prompts = []
    for _ in range(n_prompts):
        words = rng.sample(COMMON_WORDS, 2 * SEQ_LEN)
        seq, fresh = words[:SEQ_LEN], words[SEQ_LEN:]
        j = rng.randint(1, SEQ_LEN - 1)
        answer = seq[j]
        distractor = rng.choice([w for w in seq if w != answer])
        prompts.append(TaskPrompt(
            prompt=" ".join(seq + seq[:j]) + slot(masked, tail=""),
            answer=sp(answer),
            distractor=sp(distractor),
            corrupted_prompt=" ".join(seq + fresh[:j]) + slot(masked, tail=""),
            template=f"repeat-{j}",
        ))
    return Task(
        name="induction",
        prompts=tuple(prompts),
        masked=masked,
        description="induction: continue a repeated random word sequence",
    )
