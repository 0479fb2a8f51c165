"""Paper A across tokenisations: the common segmentation, pooled attention, and the score itself.

References are built by hand here: segment assignments written out for a known pair of
tokenisations, pooled vectors summed by hand, and the position-wise A of identical
tokenisations (ground truth the aligned A must reproduce exactly).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from circuitdiff.analysis.pair import paper_score
from circuitdiff.analysis.pairwise import attention_pattern_similarity
from circuitdiff.analysis.token_alignment import PAD, SPECIAL, TokenSpans, common_segmentation, pool_attention
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.models.loading import load_model
from circuitdiff.pipeline import run_model_on_task
from circuitdiff.tasks import encode_task, get_task
from circuitdiff.tasks.spans import token_spans

TEXT = "When Mary met John, she"
# teacher (GPT-2-like, leading spaces trimmed): When | Mary | met | John, | she   -- "John," is one token
TEACHER = [(0, 4), (5, 9), (10, 13), (14, 19), (20, 23), (PAD, PAD)]
# student (BERT-like): [CLS] when | ma ##ry | met | john , | she [MASK] [SEP]
STUDENT = [(SPECIAL, SPECIAL), (0, 4), (5, 7), (7, 9), (10, 13), (14, 18), (18, 19), (20, 23), (24, 30),
           (SPECIAL, SPECIAL)]


def _spans(rows: list[list[tuple[int, int]]], contexts: list[str]) -> TokenSpans:
    return TokenSpans(tuple(contexts), np.array(rows, dtype=np.int64))


def test_hand_built_segments_and_pooled_attention() -> None:
    seg = common_segmentation(_spans([TEACHER], [TEXT]), _spans([STUDENT], [TEXT]))
    # When, Mary, met, "John,", she: [CLS] (one model only) and [MASK] [SEP] (one model only) are left out
    assert seg.width == 5 and seg.shared_share == 1.0
    assert seg.teacher[0].tolist() == [0, 1, 2, 3, 4, -1]
    assert seg.student[0].tolist() == [-1, 0, 1, 1, 2, 3, 3, 4, -1, -1]
    rng = np.random.default_rng(0)
    att_t, att_s = rng.dirichlet(np.ones(6), size=(1, 1, 2)), rng.dirichlet(np.ones(10), size=(1, 1, 2))
    pooled_s = pool_attention(att_s, seg.student, seg.width)
    a = att_s[0, 0, 1]
    by_hand = np.array([a[1], a[2] + a[3], a[4], a[5] + a[6], a[7]])
    assert np.allclose(pooled_s[0, 0, 1], by_hand)
    pooled_t = pool_attention(att_t, seg.teacher, seg.width)
    assert np.allclose(pooled_t[0, 0, 0], att_t[0, 0, 0, :5])
    cos = by_hand @ att_t[0, 0, 0, :5] / np.linalg.norm(by_hand) / np.linalg.norm(att_t[0, 0, 0, :5])
    assert attention_pattern_similarity(pooled_t[:, 0, 0][:, None], pooled_s[:, 0, 1][:, None]) == pytest.approx(cos)


def test_outside_tokens_match_in_order_when_counts_agree() -> None:
    """Two BERT-like tokenisations: [CLS] with [CLS], [MASK] and [SEP] with theirs; only "Mary" differs."""
    other = [(SPECIAL, SPECIAL), (0, 4), (5, 9), (10, 13), (14, 18), (18, 19), (20, 23), (24, 30), (SPECIAL, SPECIAL)]
    seg = common_segmentation(_spans([STUDENT], [TEXT]), _spans([other], [TEXT]))
    assert seg.teacher[0].tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 8]
    assert seg.student[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_shared_text_is_the_common_prefix() -> None:
    """A causal prompt reading past the masked context ("... year 17" vs "... year "): the extra token is left out."""
    causal, masked = "the year 17", "the year "
    t = [(0, 3), (4, 8), (9, 11)]
    s = [(SPECIAL, SPECIAL), (0, 3), (4, 8), (9, 15), (SPECIAL, SPECIAL)]
    seg = common_segmentation(_spans([t], [causal]), _spans([s], [masked]))
    assert seg.teacher[0].tolist() == [0, 1, -1] and seg.student[0].tolist() == [-1, 0, 1, -1, -1]
    assert seg.shared_share == pytest.approx(len("the year ") / len(causal))


def test_token_spans_of_real_tokenizers_align_words(gpt2_tokenizer, bert_tokenizer) -> None:
    """GPT-2 on a causal IOI prompt, BERT on its masked variant: every segment is the same text on both sides."""
    causal, masked = get_task("ioi", n_prompts=4, seed=0), get_task("ioi", n_prompts=4, seed=0, masked=True)
    spans_t = token_spans(causal, encode_task(causal, gpt2_tokenizer), gpt2_tokenizer)
    spans_s = token_spans(masked, encode_task(masked, bert_tokenizer), bert_tokenizer)
    seg = common_segmentation(spans_t, spans_s)
    assert seg.shared_share > 0.95
    for r, text in enumerate(spans_t.contexts):
        for k in range(int(max(seg.teacher[r].max(), seg.student[r].max())) + 1):  # rows differ in length
            pieces = []
            for side, spans in ((seg.teacher, spans_t), (seg.student, spans_s)):
                where = side[r] == k
                assert where.any(), (r, k)
                pieces.append(text[spans.spans[r][where, 0].min():spans.spans[r][where, 1].max()].lower())
            assert pieces[0] == pieces[1], (r, k, pieces)
        words = re.findall(r"\w+|[^\w\s]", text)  # on this task every word and mark is its own segment
        assert len(words) == len(np.unique(seg.teacher[r][seg.teacher[r] >= 0]))


@pytest.fixture(scope="module")
def runs(one_torch_thread):
    out = {}
    for name in ("tiny-gpt2", "tiny-distilgpt2", "tiny-bert", "tiny-distilbert"):
        lm = load_model(name)
        task = get_task("numerals", n_prompts=12, seed=0, masked=lm.adapter.masked_lm)
        out[name] = run_model_on_task(lm, task, Ablation.ZERO, n_boot=20)
    return out


@pytest.mark.parametrize("teacher,student", [("tiny-gpt2", "tiny-distilgpt2"), ("tiny-bert", "tiny-distilbert")])
def test_aligned_paper_a_equals_position_wise_on_one_tokenisation(runs, teacher, student) -> None:
    """Ground truth: with identical tokenisations (specials included for BERT) the aligned A is the old A."""
    t, s = runs[teacher], runs[student]
    position_wise, why = paper_score(t, s, same_tokens=True)
    aligned, why_aligned = paper_score(t, s, same_tokens=False)
    assert position_wise is not None, why
    assert aligned == pytest.approx(position_wise, abs=1e-12), why_aligned


def test_cross_family_paper_a_exists_and_needs_offsets(runs) -> None:
    t, s = runs["tiny-gpt2"], runs["tiny-distilbert"]
    score, _ = paper_score(t, s, same_tokens=False)
    assert score is not None and 0.0 < score <= 1.0
    without = type(s)(**{**vars(s), "token_spans": None})
    score, why = paper_score(t, without, same_tokens=False)
    assert score is None and "offset" in why
