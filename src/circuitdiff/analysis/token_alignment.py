r"""Attention patterns of two models that tokenise differently, on one common segmentation.

The reference study's head similarity is the cosine of batch-averaged attention patterns
from the read position, compared position by position: meaningless when the models split
the prompt differently (GPT-2 against DistilBERT, its control pair). Here each prompt's
tokens of both models are mapped onto **common segments** and each head's attention is
summed per segment before the cosine:

* **Shared text**: the longest common prefix of the two models' contexts (the text before
  the answer slot; a causal prompt and its masked variant share it).
* **Context segments**: a character index is a *common boundary* when a token of each model
  starts there (starts counted after trimming whitespace, so GPT-2's " Mary" starts where
  BERT's "mary" does). The segments are the stretches between consecutive common boundaries
  (the first starts at 0): the finest segmentation both tokenisations refine. Every token
  starting in the shared text lies in exactly one segment, so its attention goes there;
  "store," is one segment if one model splits it "store" + "," and the other does not.
* **Tokens outside the shared text** (special tokens before it, such as [CLS]; the mask, the
  text after it and [SEP] after it): the ones before the shared text are matched one to one
  in order when both models have the same number of them, and likewise the ones after it;
  otherwise they are left out (GPT-2 has no [CLS] to set beside BERT's). Left-out attention
  is dropped, not renormalised: the cosine ignores scale, and a head that looks mostly at
  [CLS] then compares by what it spends on the text.

When both tokenisations are identical every token is its own segment, in order, and the
pooled patterns equal the original ones: the aligned A equals the position-wise A.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

SPECIAL = -1
"""Span value of a special token ([CLS], [SEP], <s>): it covers no text."""
PAD = -2
"""Span value of a padding position."""
MIN_SHARED = 0.5
"""Alignment is refused when a prompt's shared text is shorter than this share of its longer context:
the two models then did not read the same prompt."""


@dataclass(frozen=True)
class TokenSpans:
    """Per prompt row of one model: the context text and every token's character span in the prompt text.

    ``spans[r, i] = (start, end)``: the characters of token i with surrounding whitespace trimmed
    (GPT-2's " Mary" covers "Mary"; a token of whitespace alone is the empty span at its first
    character); ``(SPECIAL, SPECIAL)`` for a special token, ``(PAD, PAD)`` for padding.
    Characters are counted in the prompt as the model reads it (a masked prompt with its mask
    token written in), whose first ``len(contexts[r])`` characters are the context (the text
    before the answer slot). Made by ``tasks.spans.token_spans``.
    """

    contexts: tuple[str, ...]
    spans: np.ndarray


@dataclass(frozen=True)
class Segmentation:
    """Per model, each token's common segment per prompt row (-1: left out), and the number of segment slots."""

    teacher: np.ndarray
    """(n, seq_teacher) int64."""
    student: np.ndarray
    """(n, seq_student) int64."""
    width: int
    shared_share: float
    """The smallest ratio over prompts of shared text to the longer context (1: identical contexts)."""


def _zones(spans: np.ndarray, shared: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (index arrays) before the shared text, starting in it, and after it."""
    start = spans[:, 0]
    real = start != PAD
    inside = real & (start >= 0) & (start < shared)
    first = int(np.argmax(inside)) if inside.any() else len(start)
    idx = np.arange(len(start))
    outside = real & ~inside
    return idx[outside & (idx < first)], idx[inside], idx[outside & (idx > first)]


def _row_segments(t_spans: np.ndarray, s_spans: np.ndarray, shared: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One prompt: the segment of each teacher and student position (-1: left out) and the segment count."""
    seg_t, seg_s = np.full(len(t_spans), -1, np.int64), np.full(len(s_spans), -1, np.int64)
    (pre_t, ctx_t, post_t), (pre_s, ctx_s, post_s) = _zones(t_spans, shared), _zones(s_spans, shared)
    width = 0
    if len(pre_t) == len(pre_s):
        seg_t[pre_t], seg_s[pre_s] = np.arange(len(pre_t)), np.arange(len(pre_s))
        width = len(pre_t)
    starts_t, starts_s = t_spans[ctx_t, 0], s_spans[ctx_s, 0]
    bounds = np.union1d([0], np.intersect1d(starts_t, starts_s))
    local_t = np.searchsorted(bounds, starts_t, side="right") - 1
    local_s = np.searchsorted(bounds, starts_s, side="right") - 1
    used = np.union1d(local_t, local_s)  # a segment only one model starts a token in still counts
    seg_t[ctx_t] = width + np.searchsorted(used, local_t)
    seg_s[ctx_s] = width + np.searchsorted(used, local_s)
    width += len(used)
    if len(post_t) == len(post_s):
        seg_t[post_t], seg_s[post_s] = width + np.arange(len(post_t)), width + np.arange(len(post_s))
        width += len(post_t)
    return seg_t, seg_s, width


def common_segmentation(teacher: TokenSpans, student: TokenSpans) -> Segmentation:
    """The common segments of every prompt row (definition in the module docstring); rows are the same prompts."""
    if len(teacher.contexts) != len(student.contexts):
        raise ValueError(f"the models have {len(teacher.contexts)} and {len(student.contexts)} prompts")
    rows, ratios = [], []
    for r, (ct, cs) in enumerate(zip(teacher.contexts, student.contexts)):
        shared = len(os.path.commonprefix([ct, cs]))
        ratios.append(shared / max(len(ct), len(cs), 1))
        rows.append(_row_segments(teacher.spans[r], student.spans[r], shared))
    width = max((w for _, _, w in rows), default=0)
    return Segmentation(np.stack([t for t, _, _ in rows]), np.stack([s for _, s, _ in rows]), width,
                        float(min(ratios, default=1.0)))


def pool_attention(attention: np.ndarray, segments: np.ndarray, width: int) -> np.ndarray:
    """(layers, n, heads, seq) attention from the read position summed per segment: (layers, n, heads, width)."""
    onehot = np.zeros(segments.shape + (width,), dtype=np.float64)
    rows, cols = np.nonzero(segments >= 0)
    onehot[rows, cols, segments[rows, cols]] = 1.0
    return np.einsum("lnhs,nsw->lnhw", attention, onehot)
