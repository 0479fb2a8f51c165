"""The reference study's published figures, as data, so a reproduction can sit beside them.

Source: Haskins & Adams, "Distilled Circuits" (arXiv 2505.10822), as summarised in the
project's ``PAPER.md`` ("Headline findings"). Only figures the study states are here; a
figure it does not publish for a pair or task stays absent (``None``), never guessed.
The study does not say which ablation its headline numbers used (its code varies between
mean and zero), so they are shown beside both.
"""

from __future__ import annotations

from dataclasses import dataclass

STUDY_PAIRS = {
    "main": "GPT-2 / DistilGPT2",
    "bidirectional": "BERT / DistilBERT",
    "larger": "Llama-3.1-8B / Minitron-4B-Depth",
    "control": "GPT-2 / DistilBERT (control)",
}
"""The study's pair roles and how the table names them."""

NUMERALS = "numerals"
"""The task the study's drop and circuit figures come from (numeral continuation)."""


@dataclass(frozen=True)
class Published:
    """One published figure: a value or a range (``low``..``high``), and what it describes."""

    low: float
    high: float
    text: str
    """As the table prints it, e.g. '0.88–0.95'."""
    scope: str
    """Where the study states it, for the reader (which tasks, which threshold)."""


def _value(v: float, text: str, scope: str) -> Published:
    return Published(v, v, text, scope)


PAPER_ALIGNMENT = {
    "main": Published(0.88, 0.95, "0.88–0.95", "range over the study's tasks"),
    "bidirectional": Published(0.82, 0.85, "0.82–0.85", "range over the study's tasks"),
    "control": _value(0.72, "0.72", "the study's cross-family sanity floor"),
}
"""The study's alignment score A per pair role (none published for the Llama pair)."""

ON_NUMERALS = "numerals, GPT-2 / DistilGPT2"
HEAD_DROPS = {  # (figure, role) -> published, main pair on numerals only
    ("worst_head_drop_pct", "teacher"): _value(47.0, "47", ON_NUMERALS),
    ("worst_head_drop_pct", "student"): _value(104.0, "≈104", ON_NUMERALS),
    ("mean_head_drop_pct", "teacher"): _value(1.4, "1.4", ON_NUMERALS),
    ("mean_head_drop_pct", "student"): _value(7.3, "7.3", ON_NUMERALS),
}
CIRCUIT_THRESHOLD = 0.2
CIRCUIT_SIZES = {  # (figure, role) -> published at T = 0.2, main pair on numerals only
    ("circuit_heads", "teacher"): _value(14, "14", ON_NUMERALS + ", T = 0.2"),
    ("circuit_heads", "student"): _value(7, "≈7", ON_NUMERALS + ", T = 0.2"),
    ("circuit_mlps", "teacher"): _value(11, "11", ON_NUMERALS + ", T = 0.2"),
    ("circuit_mlps", "student"): _value(6, "6 (all)", ON_NUMERALS + ", T = 0.2"),
}


def published(study_pair: str, task: str, figure: str, role: str, threshold: float | None = None) -> Published | None:
    """The study's figure for this pair role, task, figure and model role, or None where it published none.

    ``task`` is circuitdiff's task name; its masked variant is the same task. The numeral
    figures are the study's for the 'numerals' task only (not the word or month variants).
    """
    if figure == "paper_alignment":
        return PAPER_ALIGNMENT.get(study_pair)
    if study_pair != "main" or task != NUMERALS:
        return None
    if figure in ("circuit_heads", "circuit_mlps"):
        return CIRCUIT_SIZES.get((figure, role)) if threshold == CIRCUIT_THRESHOLD else None
    return HEAD_DROPS.get((figure, role))
