"""Numeral sequence continuation (after Lan et al. 2023), as in the reference study.

"Van done in 1. Hat done in 2. Ring done in 3. Desk done in 4. Sun done in" -> " 5",
distractor " 4" (the last number shown: copying it is the obvious wrong strategy).
Three templates ("done"/"lost" with objects, "born" with names) rotate by prompt index.
Kinds: digits 1..99, number words one..twenty, months January..December (no wrap-around).
Corrupted prompts keep the words but show random numbers that do not count up by one.
"""

from __future__ import annotations

import random

from circuitdiff.tasks._common import check_n_prompts, rng_for, slot, sp
from circuitdiff.tasks.base import Task, TaskPrompt
from circuitdiff.tasks.vocab import ITEMS, MONTHS, NAMES, NUMBER_WORDS, NUMBERS

SHOWN = 4
"""Completed sentences before the one to finish."""

TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{w} done in {n}", ITEMS),
    ("{w} lost in {n}", ITEMS),
    ("{w} born in {n}", NAMES),
)
"""(sentence pattern, words for {w}); sentences are joined by ". "."""

KINDS: dict[str, tuple[str, ...]] = {
    "digits": NUMBERS,
    "words": NUMBER_WORDS,
    "months": MONTHS,
}
"""The ordered values each kind counts through."""


def vocabulary(kind: str) -> tuple[str, ...]:
    """Fill-in words the ``kind`` uses: items, names and its values."""
    return ITEMS + NAMES + KINDS[kind]


def _broken_sequence(rng: random.Random, n_values: int) -> list[int]:
    """SHOWN distinct value indices in which no neighbour is its predecessor's successor."""
    while True:
        idx = rng.sample(range(n_values), SHOWN)
        if all(b != a + 1 for a, b in zip(idx, idx[1:], strict=False)):
            return idx


def _text(pattern: str, words: list[str], values: list[str], masked: bool) -> str:
    """SHOWN finished sentences, then the last word's sentence up to the missing value."""
    done = [pattern.format(w=w, n=v) + "." for w, v in zip(words, values, strict=False)]
    last = pattern.format(w=words[-1], n="").rstrip()
    return " ".join(done + [last]) + slot(masked)


def generate_kind(kind: str, n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Numerals prompts counting through ``KINDS[kind]``."""
    check_n_prompts(n_prompts)
    values = KINDS[kind]
    rng = rng_for(f"numerals-{kind}", seed)
    prompts = []
    for i in range(n_prompts):
        pattern, words = TEMPLATES[i % len(TEMPLATES)]
        chosen = rng.sample(words, SHOWN + 1)
        start = rng.randrange(len(values) - SHOWN)
        shown = list(range(start, start + SHOWN))
        broken = _broken_sequence(rng, len(values))
        prompts.append(TaskPrompt(
            prompt=_text(pattern, chosen, [values[j] for j in shown], masked),
            answer=sp(values[start + SHOWN]),
            distractor=sp(values[shown[-1]]),
            corrupted_prompt=_text(pattern, chosen, [values[j] for j in broken], masked),
            template=pattern.split()[1],
            roles=tuple((f"number {k + 1}", values[j], 0) for k, j in enumerate(shown)),
        ))
    name = "numerals" if kind == "digits" else f"numerals-{kind}"
    return Task(
        name=name,
        prompts=tuple(prompts),
        masked=masked,
        description=f"numeral sequence continuation ({kind}): the next value, not the last one shown",
    )


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """The reference study's numerals task: digits 1..99."""
    return generate_kind("digits", n_prompts, seed, masked)


def generate_words(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Numerals with number words one..twenty."""
    return generate_kind("words", n_prompts, seed, masked)


def generate_months(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Numerals with months January..December."""
    return generate_kind("months", n_prompts, seed, masked)
