"""Greater-than (Hanna et al. 2023).

"The war lasted from the year 1732 to the year 17" -> "45" (any end year after the start),
distractor "21" (one not after it). GPT-2 splits " 1732" into " 17" + "32", so the answer
is the second half of the year and has NO leading space: it continues the word "17".
Corrupted prompts start in "1701", which leaves no year smaller than the answer's.

Only the 18th century is used: GPT-2 splits every " 17YY" into two tokens, and BERT
uncased holds 1701..1799 (all but 1706, never used) as whole words. BERT therefore cannot
read the causal form (the year is one WordPiece), so the masked form asks for the whole
year instead: "... to the year {mask}." -> " 1745", distractor " 1721".
"""

from __future__ import annotations

from circuitdiff.tasks._common import check_n_prompts, rng_for, sp
from circuitdiff.tasks.base import MASK, Task, TaskPrompt
from circuitdiff.tasks.vocab import EVENT_NOUNS

CENTURY = "17"
CORRUPT_YY = "01"
FIRST_YY, LAST_YY = 10, 99
"""Two-digit years used for answers and distractors (10..99; start years 11..98)."""

VOCABULARY: tuple[str, ...] = EVENT_NOUNS + tuple(f"{yy:02d}" for yy in range(FIRST_YY, LAST_YY + 1))


def _prompt(noun: str, start_yy: str, masked: bool) -> str:
    end = f" {MASK}." if masked else f" {CENTURY}"
    return f"The {noun} lasted from the year {CENTURY}{start_yy} to the year{end}"


def _year(yy: int, masked: bool) -> str:
    """Causal: the two digits that complete " 17"; masked: the whole year, spaced."""
    return sp(f"{CENTURY}{yy:02d}") if masked else f"{yy:02d}"


def generate(n_prompts: int, seed: int, masked: bool = False) -> Task:
    """Greater-than prompts; answers are two-digit year ends ("45"), or whole years if masked."""
    check_n_prompts(n_prompts)
    rng = rng_for("greater-than", seed)
    prompts = []
    for _ in range(n_prompts):
        noun = rng.choice(EVENT_NOUNS)
        start = rng.randint(FIRST_YY + 1, LAST_YY - 1)
        answer = rng.randint(start + 1, LAST_YY)
        distractor = rng.randint(FIRST_YY, start)
        prompts.append(TaskPrompt(
            prompt=_prompt(noun, f"{start:02d}", masked),
            answer=_year(answer, masked),
            distractor=_year(distractor, masked),
            corrupted_prompt=_prompt(noun, CORRUPT_YY, masked),
            template="greater-than",
        ))
    return Task(
        name="greater-than",
        prompts=tuple(prompts),
        masked=masked,
        description="greater-than: an end year after the start year, not one before it",
    )
