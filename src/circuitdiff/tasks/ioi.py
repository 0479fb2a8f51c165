"""Indirect object identification (Wang et al. 2022).

"When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect
object), distractor " John" (the subject, named twice). ABBA and BABA orders alternate.
Corrupted prompts (ABC) put three fresh names where the three names were, so the
name-mover signal is gone while length and template stay the same.
"""

from __future__ import annotations

from circuitdiff.tasks._common import check_n_prompts, rng_for, slot, sp
from circuitdiff.tasks.base import Task, TaskPrompt
from circuitdiff.tasks.vocab import NAMES, OBJECTS, PLACES

TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {place}, {C} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {C} decided to give it to",
    "Then, {A} and {B} went to the {place}. {C} gave a {object} to",
    "Then, {A} and {B} were working at the {place}. {C} decided to give a {object} to",
    "After {A} and {B} went to the {place}, {C} gave a {object} to",
    "While {A} and {B} were working at the {place}, {C} gave a {object} to",
    "Friends {A} and {B} found a {object} at the {place}. {C} gave it to",
    "Afterwards, {A} and {B} went to the {place}. {C} gave a {object} to",
)
"""{A} and {B} are the two names introduced first; {C} is the giver (the subject)."""

VOCABULARY: tuple[str, ...] = NAMES + PLACES + OBJECTS


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """IOI prompts; prompt i uses template i mod 8, BABA order when i is odd."""
    check_n_prompts(n_prompts)
    rng = rng_for("ioi", seed)
    prompts = []
    for i in range(n_prompts):
        io, s, x, y, z = rng.sample(NAMES, 5)
        fill = {"place": rng.choice(PLACES), "object": rng.choice(OBJECTS)}
        template, end = TEMPLATES[i % len(TEMPLATES)], slot(masked)
        a, b = (s, io) if i % 2 else (io, s)  # BABA / ABBA
        prompts.append(TaskPrompt(
            prompt=template.format(A=a, B=b, C=s, **fill) + end,
            answer=sp(io),
            distractor=sp(s),
            corrupted_prompt=template.format(A=x, B=y, C=z, **fill) + end,
            template=f"ioi-{i % len(TEMPLATES)}",
            roles=(("S", s, 0), ("IO", io, 0), ("S2", s, 1)),
        ))
    return Task(
        name="ioi",
        prompts=tuple(prompts),
        masked=masked,
        description="indirect object identification: answer the indirect object, not the subject",
    )
