"""encode_task on real GPT-2 and BERT tokenizers: ids, padding, read positions, errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase as Tok

from circuitdiff.errors import TaskEncodingError
from circuitdiff.tasks import BUILTIN_TASKS, EncodedTask, Task, TaskPrompt, encode_task, get_task
from circuitdiff.tasks.encode import pad_id

ALL = sorted(BUILTIN_TASKS)
N = 64


def _check_layout(enc: EncodedTask, pad: int) -> None:
    """Right padding with ``pad``; clean and corrupted share the width."""
    for ids, att in [(enc.input_ids, enc.attention_mask),
                     (enc.corrupted_input_ids, enc.corrupted_attention_mask)]:
        if ids is None:
            continue
        assert ids.shape == enc.input_ids.shape and ids.dtype == torch.long
        lengths = att.sum(1)
        for r in range(enc.n):
            assert att[r, :lengths[r]].all() and not att[r, lengths[r]:].any()
            assert (ids[r, lengths[r]:] == pad).all()
    widest = max(enc.attention_mask.sum(1).max(), enc.corrupted_attention_mask.sum(1).max()
                 if enc.corrupted_attention_mask is not None else 0)
    assert enc.input_ids.shape[1] == widest


def _decode_one(tok: Any, ids: torch.Tensor) -> list[str]:
    return [tok.decode([int(i)]) for i in ids]


@pytest.mark.parametrize("name", ALL)
def test_builtin_causal_on_gpt2(name: str, gpt2_tokenizer: Tok) -> None:
    task = get_task(name, n_prompts=N, seed=0)
    enc = encode_task(task, gpt2_tokenizer, require_aligned=True)
    assert enc.n == N and enc.aligned and not enc.masked
    _check_layout(enc, pad=gpt2_tokenizer.eos_token_id)
    # GPT-2 adds no special tokens: the last real token is the prompt's last token
    assert (enc.read_pos == enc.attention_mask.sum(1) - 1).all()
    for r, p in enumerate(task.prompts):
        ids = gpt2_tokenizer(p.prompt)["input_ids"]
        assert enc.input_ids[r, :len(ids)].tolist() == ids
    assert _decode_one(gpt2_tokenizer, enc.answer_ids) == [p.answer for p in task.prompts]
    assert _decode_one(gpt2_tokenizer, enc.distractor_ids) == [p.distractor for p in task.prompts]


@pytest.mark.parametrize("name", ALL)
def test_builtin_masked_on_bert(name: str, bert_tokenizer: Tok) -> None:
    task = get_task(name, n_prompts=N, seed=0, masked=True)
    enc = encode_task(task, bert_tokenizer, require_aligned=True)
    assert enc.masked and enc.aligned
    _check_layout(enc, pad=bert_tokenizer.pad_token_id)
    rows = torch.arange(enc.n)
    assert (enc.input_ids[rows, enc.read_pos] == bert_tokenizer.mask_token_id).all()
    assert (enc.corrupted_input_ids[rows, enc.corrupted_read_pos] == bert_tokenizer.mask_token_id).all()
    assert (enc.input_ids[:, 0] == bert_tokenizer.cls_token_id).all()
    assert _decode_one(bert_tokenizer, enc.answer_ids) == [p.answer.strip().lower() for p in task.prompts]
    distractors = [p.distractor.strip().lower() for p in task.prompts]
    assert _decode_one(bert_tokenizer, enc.distractor_ids) == distractors


@pytest.mark.parametrize("name", [n for n in ALL if n != "greater-than"])
def test_builtin_causal_on_bert_reads_before_sep(name: str, bert_tokenizer: Tok) -> None:
    enc = encode_task(get_task(name, n_prompts=16, seed=1), bert_tokenizer, require_aligned=True)
    rows = torch.arange(enc.n)
    assert (enc.input_ids[rows, enc.read_pos + 1] == bert_tokenizer.sep_token_id).all()
    assert (enc.read_pos == enc.attention_mask.sum(1) - 2).all()


def test_greater_than_causal_cannot_use_bert(bert_tokenizer: Tok) -> None:
    # "...the year 17" + "45" is the single WordPiece "1745": no slot for a two-digit answer
    with pytest.raises(TaskEncodingError, match="merges with the end of the prompt"):
        encode_task(get_task("greater-than", n_prompts=4), bert_tokenizer)


def test_masked_task_needs_a_mask_token(gpt2_tokenizer: Tok) -> None:
    with pytest.raises(TaskEncodingError, match="no mask token"):
        encode_task(get_task("ioi", n_prompts=4, masked=True), gpt2_tokenizer)


def test_each_masked_prompt_needs_one_mask(bert_tokenizer: Tok) -> None:
    ok = TaskPrompt("Mary met {mask}.", " John", " Anna")
    two = TaskPrompt("{mask} met {mask}.", " John", " Anna")
    literal = TaskPrompt("[MASK] met {mask}.", " John", " Anna")  # mask token typed in the text
    with pytest.raises(TaskEncodingError, match=r"prompt #1\b"):
        encode_task(Task("t", (ok, two), masked=True), bert_tokenizer)
    with pytest.raises(TaskEncodingError, match=r"2 mask tokens.*prompt #1\b"):
        encode_task(Task("t", (ok, literal), masked=True), bert_tokenizer)


def _jsonl(path: Path, rows: list[dict[str, str] | None]) -> Path:
    path.write_text("\n".join("" if r is None else json.dumps(r) for r in rows) + "\n")
    return path


def test_multi_token_answer_is_teacher_forced_or_cut(tmp_path: Path, gpt2_tokenizer: Tok) -> None:
    good = {"prompt": "When Mary and John left, John waved to", "answer": " Mary", "distractor": " John"}
    bad = {**good, "answer": " Marybeth"}
    path = _jsonl(tmp_path / "my.jsonl", [good, None, bad, good, None, None, bad])
    task = get_task(str(path))
    prompt_ids = gpt2_tokenizer(good["prompt"])["input_ids"]
    split = gpt2_tokenizer(good["prompt"] + " Marybeth")["input_ids"][len(prompt_ids):]
    assert len(split) > 1
    multi = encode_task(task, gpt2_tokenizer)  # both branches: prompt + answer[:-1], prompt + distractor[:-1]
    assert multi.branches == 2 and multi.answer_tokens[1].tolist()[:len(split)] == split
    assert multi.input_ids[1, :multi.attention_mask[1].sum()].tolist() == prompt_ids + split[:-1]
    assert multi.distractor_input_ids[1, :multi.distractor_attention_mask[1].sum()].tolist() == prompt_ids
    assert multi.read_pos.tolist() == [len(prompt_ids) - 1] * 4
    enc = encode_task(task, gpt2_tokenizer, first_token=True)
    n_prompt = len(gpt2_tokenizer(good["prompt"])["input_ids"])
    first = gpt2_tokenizer(good["prompt"] + " Marybeth")["input_ids"][n_prompt]
    assert enc.answer_ids.tolist() == [gpt2_tokenizer.encode(" Mary")[0], first,
                                       gpt2_tokenizer.encode(" Mary")[0], first]
    assert gpt2_tokenizer.decode([first]) != " Marybeth"


def test_masked_multi_token_answer(bert_tokenizer: Tok) -> None:
    task = Task("m", (TaskPrompt("I met {mask} today.", " Mary", " John"),
                      TaskPrompt("I met {mask} today.", " Marybeth", " John")), masked=True)
    with pytest.raises(TaskEncodingError, match=r"' Marybeth' \(prompt #1\)"):
        encode_task(task, bert_tokenizer)
    enc = encode_task(task, bert_tokenizer, first_token=True)
    assert bert_tokenizer.decode([int(enc.answer_ids[1])]) == "mary"


def test_padding_width_covers_longer_corrupted(gpt2_tokenizer: Tok) -> None:
    task = Task("t", (
        TaskPrompt("A short one to", " Mary", " John",
                   corrupted_prompt="A much much much longer corrupted one to"),
        TaskPrompt("Here is a somewhat longer clean prompt given to", " Mary", " John",
                   corrupted_prompt="Short to"),
    ))
    enc = encode_task(task, gpt2_tokenizer)
    lengths = [len(gpt2_tokenizer(t)["input_ids"]) for t in
               (task.prompts[0].prompt, task.prompts[1].prompt,
                task.prompts[0].corrupted_prompt, task.prompts[1].corrupted_prompt)]
    assert enc.input_ids.shape == enc.corrupted_input_ids.shape == (2, max(lengths))
    assert enc.read_pos.tolist() == [lengths[0] - 1, lengths[1] - 1]
    assert enc.corrupted_read_pos.tolist() == [lengths[2] - 1, lengths[3] - 1]
    _check_layout(enc, pad=gpt2_tokenizer.eos_token_id)
    assert not enc.aligned
    with pytest.raises(TaskEncodingError, match="not token-aligned.*prompts #0, #1"):
        encode_task(task, gpt2_tokenizer, require_aligned=True)


def test_no_corrupted_prompts_gives_none(gpt2_tokenizer: Tok) -> None:
    enc = encode_task(Task("t", (TaskPrompt("Hello to", " Mary", " John"),)), gpt2_tokenizer)
    assert enc.corrupted_input_ids is None and enc.corrupted_read_pos is None
    assert not enc.has_corrupted and not enc.aligned


def test_to(gpt2_tokenizer: Tok) -> None:
    enc = encode_task(get_task("ioi", n_prompts=8), gpt2_tokenizer)
    moved = enc.to("cpu")
    assert moved.input_ids.device.type == "cpu" and moved.task_name == "ioi"


class _BosTokenizer:
    """A word-level tokenizer that adds BOS (like Llama) and has no pad or eos token."""

    all_special_ids = [1]
    name_or_path = ""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1] + [self.vocab.setdefault(w, len(self.vocab) + 10) for w in t.split()]
                              for t in texts]}


def test_bos_tokenizer_and_pad_fallback() -> None:
    tok = _BosTokenizer()
    task = Task("t", (TaskPrompt("a b c", " d", " e"), TaskPrompt("a b", " d", " e")))
    enc = encode_task(task, tok)
    assert enc.input_ids.tolist() == [[1, 10, 11, 12], [1, 10, 11, 0]]
    assert enc.read_pos.tolist() == [3, 2]
    assert enc.answer_ids.tolist() == [tok.vocab["d"]] * 2
    assert encode_task(Task("t", (TaskPrompt("a", " d e", " f"),)), tok).answer_tokens.tolist() == [[13, 14]]
    with pytest.raises(TaskEncodingError, match="_BosTokenizer"):
        encode_task(Task("t", (TaskPrompt("a", " d e", " d e"),)), tok)


def test_pad_id_fallbacks() -> None:
    assert pad_id(SimpleNamespace(pad_token_id=3, eos_token_id=7)) == 3
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=7)) == 7
    assert pad_id(SimpleNamespace()) == 0


def test_fill_mask_drops_the_leading_space_only_after_a_space() -> None:
    from circuitdiff.tasks.encode import _fill_mask

    assert _fill_mask("gave it to {mask}.", " Mary") == "gave it to Mary."
    assert _fill_mask("{mask} left.", " Mary") == "Mary left."
    assert _fill_mask("the year 17{mask}.", "45") == "the year 1745."
