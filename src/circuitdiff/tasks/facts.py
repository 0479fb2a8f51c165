"""Factual recall, the reference study's third task (it used SimpleQA items).

"The capital of France is" -> " Paris", distractor " Madrid". The corrupted prompt is
the same template with another subject of the same relation ("The capital of Spain is"),
and the distractor is that subject's answer: the corrupted prompt prefers the distractor,
so the subject alone decides which of the two the model should say. Relations and facts
are in ``facts_data.py`` (provenance there). Prompts walk through the fact table in a
seeded shuffled order, so up to ``len(FACTS)`` prompts are distinct facts.

Token roles: "subject" (the subject's first token, its only one in the tokenizers the
lab builds and in GPT-2/BERT) and "end" (the read position: the last prompt token, or
the mask), which every task gets. No template word repeats a subject, so its first
occurrence is the slot (``tests/test_facts.py`` checks it for every fact).

The task allows dropping (``Task.drop_multi_token``): a model whose tokenizer splits an
answer or distractor loses those items (counted in the warnings) instead of the whole task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from circuitdiff.tasks._common import check_n_prompts, rng_for, slot, sp
from circuitdiff.tasks.base import Task, TaskPrompt
from circuitdiff.tasks.facts_data import RELATIONS


@dataclass(frozen=True)
class Fact:
    """One row of the table: ``relation``'s template asked about ``subject`` has ``answer``."""

    relation: str
    subject: str
    answer: str

    def prompt(self, masked: bool) -> str:
        return RELATIONS[self.relation][0].format(self.subject) + slot(masked)


FACTS: tuple[Fact, ...] = tuple(Fact(rel, s, a) for rel, (_, pairs) in RELATIONS.items() for s, a in pairs)

VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(w for f in FACTS for w in (f.subject, f.answer)))


def foils(fact: Fact) -> tuple[Fact, ...]:
    """Facts of the same relation that share no word with ``fact`` (so their answer differs
    and the corrupted prompt neither names the answer nor asks about the subject)."""
    words = {fact.subject, fact.answer}
    return tuple(f for f in FACTS if f.relation == fact.relation and not words & {f.subject, f.answer})


_FOILS: dict[Fact, tuple[Fact, ...]] = {f: foils(f) for f in FACTS}


def _walk(rng: random.Random, n: int) -> list[Fact]:
    """``n`` facts: the table in a shuffled order, reshuffled each time it runs out."""
    out: list[Fact] = []
    while len(out) < n:
        out.extend(rng.sample(FACTS, len(FACTS)))
    return out[:n]


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Factual-recall prompts; the template id is the relation, shared by the corrupted prompt."""
    check_n_prompts(n_prompts)
    rng = rng_for("facts", seed)
    prompts = []
    for fact in _walk(rng, n_prompts):
        other = rng.choice(_FOILS[fact])
        prompts.append(TaskPrompt(
            prompt=fact.prompt(masked),
            answer=sp(fact.answer),
            distractor=sp(other.answer),
            corrupted_prompt=other.prompt(masked),
            template=f"facts-{fact.relation}",
            roles=(("subject", fact.subject, 0),),
        ))
    return Task(
        name="facts",
        prompts=tuple(prompts),
        masked=masked,
        description="factual recall: the subject's attribute, not another subject's",
        drop_multi_token=True,
    )
