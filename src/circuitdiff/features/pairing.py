"""Which teacher position goes with which student position when the two models tokenise differently.

Each model tokenises the same text itself. A pair is a teacher position and a student position whose tokens
END at the same character of the text (a common boundary): both activations have then read exactly the same
text (up to whitespace, which the spans of ``tasks.spans`` trim). A position whose token ends inside the other
model's token is skipped, and so is a token without a text span (special tokens such as [CLS] and [SEP], a
masked LM's [MASK], padding). Where several tokens of one model end at one character (a whitespace token after
a word, the byte pieces of one emoji), they are paired in order when both models have as many there, else the
last one with text of each is. With one tokenisation for both models every token is paired with itself.

Corpus text is cut into rows of ``context`` teacher tokens, as before; a cut is moved back, within the row, to
a teacher token where a student token starts too (and so that the student's row is no longer than its own
limit), so that both models' rows start at the same character. A row whose start no such cut could align (a
student token straddles it) gives no pairs: its two rows read different text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from circuitdiff.analysis.token_alignment import TokenSpans


def pair_by_ends(t_spans: np.ndarray, s_spans: np.ndarray, limit: int | None = None) -> list[tuple[int, int]]:
    """(teacher position, student position) of the tokens of one row that end at a common character.

    ``*_spans``: (seq, 2) trimmed character spans, negative for special tokens and padding; only tokens
    ending at or before ``limit`` (the text both models read, when given) are paired."""
    groups = [_by_end(spans, limit) for spans in (t_spans, s_spans)]
    pairs: list[tuple[int, int]] = []
    for end in sorted(set(groups[0]) & set(groups[1])):
        a, b = groups[0][end], groups[1][end]
        if len(a) == len(b):
            pairs.extend(zip(a, b, strict=True))
            continue
        with_text = [[i for i in g if spans[i, 1] > spans[i, 0]] for g, spans in ((a, t_spans), (b, s_spans))]
        if with_text[0] and with_text[1]:
            pairs.append((with_text[0][-1], with_text[1][-1]))
    return pairs


def _by_end(spans: np.ndarray, limit: int | None) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, (start, end) in enumerate(spans.tolist()):
        if start >= 0 and (limit is None or end <= limit):
            out.setdefault(end, []).append(i)
    return out


def cut_rows(t_spans: np.ndarray, s_spans: np.ndarray, text: str,
             context: tuple[int, int]) -> list[tuple[slice, slice, bool]]:
    """One text's rows: (teacher tokens, student tokens, whether both rows start at the same character), each
    at most ``context`` (teacher, student) tokens long."""
    t_start, s_start = t_spans[:, 0], s_spans[:, 0]
    if (np.diff(t_start) < 0).any() or (np.diff(s_start) < 0).any():
        raise ValueError("token offsets are not in text order")

    def student_at(i: int) -> int | None:
        """The student token starting where teacher token i does (the same rank among tokens starting there;
        for a teacher token of whitespace alone, the student's next token), or None: no student row starts there."""
        if i == len(t_start):
            return len(s_start)
        p = int(t_start[i])
        first = int(np.searchsorted(s_start, p))
        j = first + i - int(np.searchsorted(t_start, p))
        if first > 0 and s_spans[first - 1, 1] > p:  # a student token straddles p
            return None
        if j < len(s_start) and s_start[j] == p:
            return j
        following = int(s_start[first]) if first < len(s_start) else len(text)
        return first if j == first and not text[p:following].strip() else None

    rows: list[tuple[slice, slice, bool]] = []
    i, j, aligned = 0, 0, student_at(0) == 0
    while i < len(t_start):
        longest = min(len(t_start), i + context[0])
        e = next((c for c in range(longest, i, -1)
                  if (at := student_at(c)) is not None and at - j <= context[1]), longest)
        nxt = student_at(e)
        j_end = nxt if nxt is not None else int(np.searchsorted(s_start, t_start[e]))
        j_end = min(max(j, j_end), j + context[1])
        rows.append((slice(i, e), slice(j, j_end), aligned))
        i, j, aligned = e, j_end if nxt is None else nxt, nxt is not None  # a capped student row drops its tail
    return rows


def prompt_pairs(teacher: TokenSpans, student: TokenSpans) -> list[list[tuple[int, int]]]:
    """Per prompt row, the pairs of positions ending at a common character inside the text both models read
    (the common prefix of their contexts: a causal prompt and its masked variant share the text before the
    answer slot)."""
    out = []
    for r, (ct, cs) in enumerate(zip(teacher.contexts, student.contexts, strict=True)):
        shared = len(os.path.commonprefix([ct, cs]))
        out.append(pair_by_ends(teacher.spans[r], student.spans[r], limit=shared))
    return out


def as_rows(pairs_per_row: Sequence[Sequence[tuple[int, int]]], drop_first: bool = True) -> np.ndarray:
    """(n, 3) int64 rows (row, teacher position, student position), in row then teacher-position order; pairs
    holding a row's first position of either model are left out (an attention sink with a huge norm)."""
    flat = [(r, i, j) for r, pairs in enumerate(pairs_per_row) for i, j in sorted(pairs)
            if not (drop_first and (i == 0 or j == 0))]
    return np.array(flat, dtype=np.int64).reshape(-1, 3)
