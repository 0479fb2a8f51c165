"""Lab training rows on multi-token answers: the prompt then every answer token, each one weighted.

The reference is written here: token ids from the word tokenizer's own numbering (``w<i>`` is id
i + 4), and the weighted loss as a loop of ``log_softmax`` terms in float64. One-token tasks keep
the rows and loss of the release before (frozen digests and values, recorded at 83c4045).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from circuitdiff.lab.data import build_pool, collate, task_rows
from circuitdiff.lab.losses import answer_weights, lm_loss
from circuitdiff.lab.recipe import DataRecipe
from circuitdiff.models.loading import resolve
from circuitdiff.tasks import Task, TaskPrompt, encode_task
from tiny_models import tiny_model, word_tokenizer

WEIGHT = 5.0
PROMPTS = {  # prompt -> (answer, distractor): answers of 3, 1 and 2 words, distractors of 1, 2 and 1
    "multi": (("w10 w11 w12", " w20 w21 w22", " w30"), ("w13 w14", " w23", " w31 w32"), ("w15 w16 w17 w18", " w24 w25", " w33")),
    "one": (("w10 w11 w12", " w20", " w30"), ("w13 w14", " w23", " w31"), ("w15 w16 w17 w18", " w24", " w33")),
}


def _word_ids(text: str) -> list[int]:
    """The word tokenizer's numbering, by hand: [PAD] [BOS] [MASK] [UNK] then w0, w1, ..."""
    return [int(w[1:]) + 4 for w in text.split()]


def _reference_loss(logits: torch.Tensor, rows: list[list[int]], answers: list[range]) -> float:
    """Mean over every next-token prediction of -log p, weighted WEIGHT at answer tokens, 1 elsewhere."""
    total = weight_sum = 0.0
    logp = torch.log_softmax(logits.double(), dim=-1)
    for i, (ids, answer) in enumerate(zip(rows, answers)):
        for t in range(1, len(ids)):
            w = WEIGHT if t in answer else 1.0
            total += -w * float(logp[i, t - 1, ids[t]])
            weight_sum += w
    return total / weight_sum


@pytest.mark.parametrize("case", ["multi", "one"])
def test_rows_hold_the_prompt_and_every_answer_token_and_the_loss_weights_exactly_those(case: str) -> None:
    tok = word_tokenizer()
    task = Task(case, tuple(TaskPrompt(p, a, d) for p, a, d in PROMPTS[case]))
    enc = encode_task(task, tok)
    assert enc.branches == (2 if case == "multi" else 1)
    rows = task_rows(enc, case)
    expected = [_word_ids(p) + _word_ids(a) for p, a, _ in PROMPTS[case]]
    answers = [range(len(_word_ids(p)), len(_word_ids(p)) + len(_word_ids(a))) for p, a, _ in PROMPTS[case]]
    assert [r.ids for r in rows] == expected
    assert [range(r.answer_pos, r.answer_pos + r.answer_len) for r in rows] == answers

    batch = collate(rows, "causal", tok, 0.15, torch.Generator().manual_seed(0))
    width = max(map(len, expected))
    mask = torch.tensor([[t in a for t in range(width)] for a in answers])
    assert torch.equal(batch["answer_mask"], mask)
    assert torch.equal(batch["attention_mask"].bool(), torch.tensor([[t < len(e) for t in range(width)] for e in expected]))
    model = tiny_model("gpt2", seed=3)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = lm_loss(logits, batch["labels"], True, answer_weights(batch, WEIGHT))
    assert float(loss) == pytest.approx(_reference_loss(logits, expected, answers), rel=1e-6)
    unweighted = lm_loss(logits, batch["labels"], True, answer_weights(batch, 1.0))
    assert float(unweighted) != pytest.approx(float(loss), rel=1e-3)  # the weight reaches the answer tokens


FROZEN = {  # rows digest, pool size, answer positions of 8 rows, weighted LM loss: before multi-token rows
    "causal": ("tiny-gpt2", "4a8724093521edc0", 40, [23, 23, 23, 18, 14, 7, 5, 7], 0.7526651620864868),
    "masked": ("tiny-bert", "4ef44db28ff24d8c", 40, [24, 24, 24, 19, 15, 8, 6, 8], 0.32956236600875854),
}


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_one_token_tasks_keep_the_previous_rows_and_loss(kind: str) -> None:
    name, digest, n_rows, positions, frozen_loss = FROZEN[kind]
    path = resolve(name)[0]
    tok = AutoTokenizer.from_pretrained(path)
    data = DataRecipe(tasks=("numerals", "ioi", "facts"), task_prompts_per_task=12, task_prompts=(), corpus_max_chunks=4)
    pool = build_pool(kind, tok, data, 0, 64)
    rows = [(r.ids, r.answer_pos, r.task) for r in pool.rows]
    assert len(rows) == n_rows and hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16] == digest
    assert all(r.answer_len == 1 for r in pool.rows)
    batch = collate(pool.rows[::5][:8], kind, tok, 0.15, torch.Generator().manual_seed(0))
    assert batch["answer_mask"].nonzero()[:, 1].tolist() == positions
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    model = auto.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = lm_loss(logits, batch["labels"], kind == "causal", answer_weights(batch, WEIGHT))
    assert float(loss) == pytest.approx(frozen_loss, rel=1e-6)
