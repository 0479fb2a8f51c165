"""Successor: continue a familiar ordered list by one.

"Monday, Tuesday, Wednesday," -> " Thursday", distractor " Wednesday" (the last item
shown). Lists: weekdays and months (both wrap around), number words one..twenty.
Corrupted prompts shuffle the shown items (the first stays put, so the length cannot
change with a tokenizer that spells a word differently at the start of the text) so
that no item is followed by its successor.
"""

from __future__ import annotations

import random

from circuitdiff.tasks._common import check_n_prompts, rng_for, slot, sp
from circuitdiff.tasks.base import Task, TaskPrompt
from circuitdiff.tasks.vocab import MONTHS, NUMBER_WORDS, WEEKDAYS

SEQUENCES: tuple[tuple[tuple[str, ...], bool], ...] = (
    (WEEKDAYS, True),
    (MONTHS, True),
    (NUMBER_WORDS, False),
)
"""(items in order, whether the list wraps around); prompt i uses list i mod 3."""

MIN_SHOWN, MAX_SHOWN = 3, 5

VOCABULARY: tuple[str, ...] = WEEKDAYS + MONTHS + NUMBER_WORDS


def _shuffle(rng: random.Random, shown: list[str], order: tuple[str, ...], wraps: bool) -> list[str]:
    """Reorder all but the first item so that no neighbour pair is (x, successor of x)."""
    def succ(word: str) -> str | None:
        k = order.index(word) + 1
        return order[k % len(order)] if (wraps or k < len(order)) else None

    while True:
        rest = shown[1:]
        rng.shuffle(rest)
        cand = shown[:1] + rest
        if all(succ(a) != b for a, b in zip(cand, cand[1:], strict=False)):
            return cand


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Successor prompts of 3..5 shown items."""
    check_n_prompts(n_prompts)
    rng = rng_for("successor", seed)
    prompts = []
    for i in range(n_prompts):
        order, wraps = SEQUENCES[i % len(SEQUENCES)]
        k = rng.randint(MIN_SHOWN, MAX_SHOWN)
        start = rng.randrange(len(order) if wraps else len(order) - k)
        items = [order[(start + j) % len(order)] for j in range(k + 1)]
        shown, nxt = items[:k], items[k]
        corrupted = _shuffle(rng, shown, order, wraps)
        prompts.append(TaskPrompt(
            prompt=", ".join(shown) + "," + slot(masked),
            answer=sp(nxt),
            distractor=sp(shown[-1]),
            corrupted_prompt=", ".join(corrupted) + "," + slot(masked),
            template=f"list{i % len(SEQUENCES)}-{k}",
        ))
    return Task(
        name="successor",
        prompts=tuple(prompts),
        masked=masked,
        description="successor: the next weekday, month or number word, not the last one shown",
    )
