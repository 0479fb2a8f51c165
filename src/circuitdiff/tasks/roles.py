"""Where each token role (subject, indirect object, each earlier number, ...) sits in a model's own tokens.

A prompt names its roles by word and occurrence (``TaskPrompt.roles``); each tokenizer
finds the token covering that word's first character through its offset mapping, so
teacher and student get positions in their own tokenisation. Prompts without roles
(JSONL, other built-ins) get positions relative to the read position instead.
"""

from __future__ import annotations

import re

import numpy as np
from transformers import PreTrainedTokenizerBase

from circuitdiff.tasks.base import MASK, Task
from circuitdiff.tasks.encode import EncodedTask

END_OFFSETS = 4
"""Without named roles: the read position and the 4 tokens before it ("end", "end-1", ...)."""


def char_start(text: str, word: str, occurrence: int) -> int | None:
    """Character index of the ``occurrence``-th whole-word match of ``word`` in ``text``."""
    matches = list(re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text))
    return matches[occurrence].start() if occurrence < len(matches) else None


def token_at(offsets: list[tuple[int, int]], char: int) -> int | None:
    """Index of the (non-special) token whose character span covers ``char``."""
    for i, (a, b) in enumerate(offsets):
        if a <= char < b:
            return i
    return None


def role_positions(task: Task, encoded: EncodedTask, tokenizer: PreTrainedTokenizerBase) -> dict[str, np.ndarray]:
    """Role -> (n,) token position per encoded row (-1 where the role is missing or not found).

    Always includes "end", the read position. Needs a fast tokenizer for named roles; a
    row whose re-tokenisation differs from its encoded ids gets -1 (never a wrong position).
    """
    read = encoded.read_pos.cpu().numpy().astype(np.int64)
    rows = (encoded.prompt_index.cpu().numpy() if encoded.prompt_index is not None else np.arange(encoded.n))
    prompts = [task.prompts[int(i)] for i in rows]
    names = list(dict.fromkeys(role for p in prompts for role, _, _ in p.roles))
    out = {"end": read}
    if not names or not getattr(tokenizer, "is_fast", False):
        for k in range(1, END_OFFSETS + 1):
            out[f"end-{k}"] = np.where(read - k >= 0, read - k, -1)
        return out
    for name in names:
        out[name] = np.full(encoded.n, -1, dtype=np.int64)
    ids = encoded.input_ids.cpu().numpy()
    for r, p in enumerate(prompts):
        text = p.prompt.replace(MASK, tokenizer.mask_token) if task.masked else p.prompt
        enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        tok = list(enc["input_ids"])
        if tok != list(ids[r, :len(tok)]):
            continue
        offsets = [(0, 0) if s else (a, b) for (a, b), s in zip(enc["offset_mapping"], enc["special_tokens_mask"])]
        for role, word, occurrence in p.roles:
            char = char_start(text, word, occurrence)
            pos = token_at(offsets, char) if char is not None else None
            if pos is not None:
                out[role][r] = pos
    return out
