"""The `facts` task (factual recall): data, corruption, masked reading, per-model dropping."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoTokenizer
from transformers import PreTrainedTokenizerBase as Tok

from circuitdiff.compare import CompareOptions, prepare_tasks
from circuitdiff.errors import TaskEncodingError, TaskFileError
from circuitdiff.lab.card import _note
from circuitdiff.lab.data import build_pool
from circuitdiff.lab.evaluate import evaluate_tasks, logit_diffs
from circuitdiff.lab.pairs import PAIRS_DIR
from circuitdiff.lab.recipe import ALL_TASKS, DataRecipe
from circuitdiff.models.loading import load_model
from circuitdiff.tasks import MASK, Task, TaskPrompt, encode_task, get_task, training_prompts
from circuitdiff.tasks.encode import drop_multi_token_items
from circuitdiff.tasks.facts import FACTS
from circuitdiff.tasks.facts_data import RELATIONS

N = 200
ANSWER = {(rel, s): a for rel, (_, pairs) in RELATIONS.items() for s, a in pairs}


@pytest.fixture(scope="module")
def tiny_gpt2_tokenizer() -> Tok:
    """The shipped causal pair's own small BPE: it splits most fact answers."""
    return AutoTokenizer.from_pretrained(PAIRS_DIR / "tiny-gpt2")


@pytest.fixture(scope="module")
def tiny_bert_tokenizer() -> Tok:
    return AutoTokenizer.from_pretrained(PAIRS_DIR / "tiny-bert")


def _subject(rel: str, text: str) -> str:
    """Invert the relation's template: the subject the text asks about."""
    head, tail = RELATIONS[rel][0].split("{}")
    assert text.startswith(head) and text.endswith(tail), (rel, text)
    return text[len(head):len(text) - len(tail)]


def _one_token(tok: Tok, word: str, masked: bool) -> bool:
    """Independent reference: the word alone (with its leading space for BPE) is one token."""
    return len(tok.tokenize(word.strip() if masked else word)) == 1


def test_table_is_large_distinct_and_deterministic() -> None:
    assert len(FACTS) >= 200 and len(set(FACTS)) == len(FACTS)
    assert len({(f.relation, f.subject) for f in FACTS}) == len(FACTS)  # one answer per question
    a = get_task("facts", N, seed=3)
    assert a == get_task("facts", N, seed=3) and len(a) == N and a.drop_multi_token
    assert a.prompts != get_task("facts", N, seed=4).prompts
    assert len({p.prompt for p in a.prompts}) == N  # up to len(FACTS) prompts are distinct facts
    assert {p.template for p in a.prompts} == {f"facts-{rel}" for rel in RELATIONS}
    assert len(get_task("facts", 2 * len(FACTS), seed=0)) == 2 * len(FACTS)  # then it walks the table again


@pytest.mark.parametrize("masked", [False, True])
def test_corrupted_prompt_changes_only_the_subject(masked: bool) -> None:
    for p in get_task("facts", N, seed=1, masked=masked).prompts:
        rel = p.template.removeprefix("facts-")
        end = f" {MASK}." if masked else ""
        assert p.prompt.endswith(end) and p.corrupted_prompt.endswith(end)
        subject = _subject(rel, p.prompt.removesuffix(end))
        other = _subject(rel, p.corrupted_prompt.removesuffix(end))  # same template
        assert other != subject and p.answer == " " + ANSWER[rel, subject]
        # the distractor is the corrupted subject's own answer: the subject alone decides
        assert p.distractor == " " + ANSWER[rel, other] != p.answer
        assert p.answer.strip() not in p.corrupted_prompt and other != p.answer.strip()


def test_training_prompts_are_the_same_facts_from_another_stream() -> None:
    train, evaluation = training_prompts("facts", N, seed=0), get_task("facts", N, seed=0)
    assert train.prompts != evaluation.prompts
    assert all((p.template.removeprefix("facts-"), _subject(p.template[6:], p.prompt)) in ANSWER for p in train.prompts)


def test_every_answer_distractor_and_subject_is_one_gpt2_token(gpt2_tokenizer: Tok) -> None:
    words = {w for f in FACTS for w in (f.subject, f.answer)}
    assert [w for w in sorted(words) if not _one_token(gpt2_tokenizer, " " + w, False)] == []
    task = get_task("facts", len(FACTS), seed=0)
    enc = encode_task(task, gpt2_tokenizer, require_aligned=True)  # nothing dropped, clean and corrupted aligned
    assert enc.n == len(FACTS) and enc.aligned
    assert [gpt2_tokenizer.decode([int(i)]) for i in enc.answer_ids] == [p.answer for p in task.prompts]
    assert [gpt2_tokenizer.decode([int(i)]) for i in enc.distractor_ids] == [p.distractor for p in task.prompts]
    assert drop_multi_token_items([task], [gpt2_tokenizer]) == ([task], None)
    assert len(enc.template_names) == len(RELATIONS)  # one group per relation: template-aligned mean ablation


def test_masked_variant_reads_at_the_mask_on_bert(bert_tokenizer: Tok) -> None:
    words = {w.lower() for f in FACTS for w in (f.subject, f.answer)}
    assert [w for w in sorted(words) if not _one_token(bert_tokenizer, w, True)] == []
    task = get_task("facts", len(FACTS), seed=2, masked=True)
    enc = encode_task(task, bert_tokenizer, require_aligned=True)
    assert enc.n == len(FACTS) and enc.masked and enc.aligned
    for r in (0, 7, len(FACTS) - 1):
        p = task.prompts[r]
        ids = bert_tokenizer(p.prompt.replace(MASK, "[MASK]"))["input_ids"]
        assert int(enc.read_pos[r]) == ids.index(bert_tokenizer.mask_token_id)
        filled = bert_tokenizer(p.prompt.replace(MASK, p.answer.strip()))["input_ids"]
        assert int(enc.answer_ids[r]) == filled[int(enc.read_pos[r])]
    rows = torch.arange(enc.n)
    assert (enc.input_ids[rows, enc.read_pos] == bert_tokenizer.mask_token_id).all()


def test_dropping_counts_exactly_the_split_items(tiny_gpt2_tokenizer: Tok) -> None:
    task = get_task("facts", N, seed=0)
    (kept,), note = drop_multi_token_items([task], [tiny_gpt2_tokenizer])
    expected = [p for p in task.prompts
                if _one_token(tiny_gpt2_tokenizer, p.answer, False) and _one_token(tiny_gpt2_tokenizer, p.distractor, False)]
    assert 0 < len(expected) < N and kept.prompts == tuple(expected)
    assert note is not None and f"dropped {N - len(expected)} of {N} items" in note and "'tiny-gpt2'" in note
    enc = encode_task(kept, tiny_gpt2_tokenizer)
    assert enc.n == len(expected)
    with pytest.raises(TaskEncodingError, match="not a single token for tokenizer 'tiny-gpt2'"):
        encode_task(task, tiny_gpt2_tokenizer)  # encode_task itself never drops
    assert encode_task(task, tiny_gpt2_tokenizer, first_token=True).n == N


def test_only_tasks_that_allow_it_lose_items(tiny_gpt2_tokenizer: Tok) -> None:
    prompts = (TaskPrompt("The capital of France is", " Paris", " Copenhagen"),) * 4
    strict = Task("mine", prompts)
    assert drop_multi_token_items([strict], [tiny_gpt2_tokenizer]) == ([strict], None)
    with pytest.raises(TaskEncodingError, match=r"every item's answer or distractor is split by a tokenizer \(of 4: 4 for tokenizer 'tiny-gpt2'\)"):
        drop_multi_token_items([Task("mine", prompts, drop_multi_token=True)], [tiny_gpt2_tokenizer])


def test_both_models_keep_the_same_items_across_tokenizers(tiny_gpt2_tokenizer: Tok, tiny_bert_tokenizer: Tok) -> None:
    causal, masked = get_task("facts", N, seed=0), get_task("facts", N, seed=0, masked=True)
    (a, b), note = drop_multi_token_items([causal, masked], [tiny_gpt2_tokenizer, tiny_bert_tokenizer])
    alone = {len(drop_multi_token_items([t], [tok])[0][0]) for t, tok in
             ((causal, tiny_gpt2_tokenizer), (masked, tiny_bert_tokenizer))}
    assert len(a) == len(b) <= min(alone) and len(a) > 0
    assert [p.answer for p in a.prompts] == [p.answer for p in b.prompts]
    assert [p.prompt + f" {MASK}." for p in a.prompts] == [p.prompt for p in b.prompts]
    assert note is not None and "'tiny-gpt2'" in note and "'tiny-bert'" in note


def test_prepare_tasks_gives_both_models_the_same_items_and_warns() -> None:
    teacher, student = load_model("tiny-gpt2"), load_model("tiny-bert")  # two tokenizers, causal and masked
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (item,) = prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=N))
    (t_task, t_enc), (s_task, s_enc) = item.teacher, item.student
    assert t_enc.n == s_enc.n == len(t_task) == len(s_task) < N
    assert [p.answer for p in t_task.prompts] == [p.answer for p in s_task.prompts]
    assert any(f"of {N} items" in str(w.message) for w in caught)
    (item,) = prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=N, first_token=True))
    assert item.teacher[1].n == item.student[1].n == N  # --first-token keeps the study's behaviour


def test_lab_trains_and_evaluates_on_the_items_its_tokenizer_keeps(tiny_gpt2_tokenizer: Tok) -> None:
    assert "facts" in ALL_TASKS
    data = DataRecipe(tasks=("facts",), task_prompts_per_task=300, task_prompts=(), corpus_max_chunks=4)
    pool = build_pool("causal", tiny_gpt2_tokenizer, data, seed=0, context=64)
    summary = pool.summary["tasks"]["facts"]
    rows = [r for r in pool.rows if r.task == "facts"]
    assert summary["rows"] == len(rows) > 0 and summary["multi_token_dropped"] == 300 - len(rows)
    for row in rows[:20]:  # prompt then its answer, scored at the answer
        text = tiny_gpt2_tokenizer.decode(row.ids)
        rel = next(rel for rel, (tpl, _) in RELATIONS.items() if text.startswith(tpl.split("{}")[0]))
        subject = _subject(rel, tiny_gpt2_tokenizer.decode(row.ids[:row.answer_pos]))
        assert tiny_gpt2_tokenizer.decode(row.ids[row.answer_pos:]) == " " + ANSWER[rel, subject]
    teacher = load_model("tiny-gpt2")
    ld = logit_diffs(teacher.model, teacher.tokenizer, "facts", N, 0, masked=False)
    kept = len(drop_multi_token_items([get_task("facts", N, 0)], [teacher.tokenizer])[0][0])
    assert ld.numel() == kept
    result = evaluate_tasks(teacher.model, teacher.tokenizer, "causal", ("facts", "numerals"), n_prompts=N)
    assert result["facts"]["n_prompts"] == kept and result["facts"]["dropped"] == N - kept
    assert "dropped" not in result["numerals"] and result["numerals"]["n_prompts"] == N
    assert f"on the {kept} prompts kept ({N - kept} have an answer" in _note(result["facts"])  # the model card says so


def test_too_few_items_left_names_the_drop() -> None:
    teacher, student = load_model("tiny-gpt2"), load_model("tiny-distilgpt2")
    with pytest.raises(TaskFileError, match=r"has \d prompts; circuitdiff needs at least 4 \(facts: dropped \d+ of 24"), \
            pytest.warns(UserWarning, match="dropped"):
        prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=24))
