"""Where each of a model's tokens sits in its prompt's text: what lets two tokenisations be aligned.

The reference study compares attention patterns position by position, which needs both
models to tokenise alike. To compare, say, a GPT-2 head with a DistilBERT head, each model
records per prompt the character span of every token and the *context* (the text before
the answer slot, which the causal and the masked variant of a task share); the analysis
(``analysis.token_alignment``) builds from both a segmentation common to the two
tokenisations. Like ``tasks.roles``, it needs a fast tokenizer's offset mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from circuitdiff.analysis.token_alignment import PAD, SPECIAL, TokenSpans
from circuitdiff.tasks.base import MASK, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from circuitdiff.tasks.encode import EncodedTask


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without its leading and trailing whitespace (empty at ``start`` if all whitespace)."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return start, start
    a = start + (len(piece) - len(piece.lstrip()))
    return a, a + len(stripped)


def text_spans(text: str, tokenizer: PreTrainedTokenizerBase, add_special_tokens: bool = True) -> tuple[list[int], np.ndarray]:
    """One text's token ids and each token's (start, end) characters, whitespace trimmed; ``SPECIAL`` for special
    tokens. Needs a fast tokenizer (its offset mapping)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                    return_special_tokens_mask=True, verbose=False)
    spans = np.array([(SPECIAL, SPECIAL) if special else _trimmed(text, a, b)
                      for (a, b), special in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)],
                     dtype=np.int64).reshape(-1, 2)
    return list(enc["input_ids"]), spans


def token_spans(task: Task, encoded: EncodedTask, tokenizer: PreTrainedTokenizerBase) -> TokenSpans | None:
    """The ``TokenSpans`` of ``encoded``, or None without a fast tokenizer or when a row does not re-tokenise
    to its encoded ids (a wrong span would align the wrong tokens; none is better)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    ids = encoded.input_ids.cpu().numpy()
    real = encoded.attention_mask.cpu().numpy().astype(bool)
    rows = encoded.prompt_index.cpu().numpy() if encoded.prompt_index is not None else np.arange(encoded.n)
    spans = np.full(ids.shape + (2,), PAD, dtype=np.int64)
    contexts = []
    for r, index in enumerate(rows):
        prompt = task.prompts[int(index)].prompt
        text = prompt.replace(MASK, tokenizer.mask_token) if task.masked else prompt
        contexts.append(prompt[:prompt.index(MASK)] if task.masked else prompt)
        tokens, row_spans = text_spans(text, tokenizer)
        # a multi-token task's row continues with the answer's tokens: those positions keep PAD spans
        row = ids[r][:len(tokens)] if encoded.branches > 1 else ids[r][real[r]]
        if tokens != list(row) or not real[r][:len(tokens)].all():
            return None
        spans[r, :len(tokens)] = row_spans
    return TokenSpans(tuple(contexts), spans)
