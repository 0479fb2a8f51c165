"""The `facts` task (factual recall): data, corruption, masked reading, per-model dropping."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel
from transformers import PreTrainedTokenizerBase as Tok

from circuitdiff.compare import CompareOptions, prepare_tasks
from circuitdiff.errors import TaskEncodingError, TaskFileError
from circuitdiff.lab.card import _note
from circuitdiff.lab.data import build_pool
from circuitdiff.lab.errors import LabError
from circuitdiff.lab.evaluate import evaluate_tasks, logit_diffs
from circuitdiff.lab.recipe import ALL_TASKS, DataRecipe
from circuitdiff.models.loading import load_model
from circuitdiff.tasks import MASK, Task, TaskPrompt, encode_task, get_task, training_prompts
from circuitdiff.tasks.encode import drop_multi_token_items
from circuitdiff.tasks.facts import FACTS
from circuitdiff.tasks.facts_data import RELATIONS

N = 200
ANSWER = {(rel, s): a for rel, (_, pairs) in RELATIONS.items() for s, a in pairs}


SPLIT_RELATIONS = ("opposite", "color", "legs")
"""The only relations whose words the small tokenizers below keep whole: items of every other
relation have a split answer or distractor (the shipped pairs keep every item, so they cannot
show the dropping)."""


def _small_tokenizers(relations: tuple[str, ...]) -> tuple[Tok, Tok]:
    """A 400-piece byte-level BPE and WordPiece from a little Austen, forced to keep ``relations``' words
    (and numerals' words, a task that never drops items, for contrast)."""
    from circuitdiff.lab.corpus import load_corpus
    from circuitdiff.lab.tokenizer import train_bpe, train_wordpiece
    from circuitdiff.tasks import task_vocabulary

    texts = load_corpus("sample")[:300]
    words = sorted({w for f in FACTS if f.relation in relations for w in (f.subject, f.answer)})
    words += task_vocabulary("numerals")
    numbers = sorted({w for p in get_task("numerals", N, 0).prompts for w in (p.answer, p.distractor)})
    return (train_bpe(texts, 400, [" " + w for w in words] + numbers, 64),
            train_wordpiece(texts, 400, words + [w.strip() for w in numbers], 64))


@pytest.fixture(scope="module")
def split_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random 2-layer GPT-2 teacher, 1-layer GPT-2 student and 2-layer BERT that use those tokenizers."""
    bpe, wordpiece = _small_tokenizers(SPLIT_RELATIONS)
    root, paths = tmp_path_factory.mktemp("split"), {}
    for name, tok, model in (
        ("split-gpt2", bpe, GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=len(bpe), n_positions=64))),
        ("split-distilgpt2", bpe, GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(bpe), n_positions=64))),
        ("split-bert", wordpiece, BertForMaskedLM(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                                                            intermediate_size=32, vocab_size=len(wordpiece),
                                                            max_position_embeddings=64))),
    ):
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def split_gpt2_tokenizer(split_pair: dict[str, Path]) -> Tok:
    return AutoTokenizer.from_pretrained(split_pair["split-gpt2"])


@pytest.fixture(scope="module")
def split_bert_tokenizer(split_pair: dict[str, Path]) -> Tok:
    return AutoTokenizer.from_pretrained(split_pair["split-bert"])


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


def test_dropping_counts_exactly_the_split_items(split_gpt2_tokenizer: Tok) -> None:
    tok = split_gpt2_tokenizer
    task = get_task("facts", N, seed=0)
    (kept,), note = drop_multi_token_items([task], [tok])
    expected = [p for p in task.prompts if _one_token(tok, p.answer, False) and _one_token(tok, p.distractor, False)]
    assert 0 < len(expected) < N and kept.prompts == tuple(expected)
    assert {p.template for p in kept.prompts} == {f"facts-{rel}" for rel in SPLIT_RELATIONS}
    assert note is not None and f"dropped {N - len(expected)} of {N} items" in note and "'split-gpt2'" in note
    enc = encode_task(kept, tok)
    assert enc.n == len(expected)
    assert encode_task(task, tok).branches == 2  # encode_task itself never drops: split answers are teacher-forced
    assert encode_task(task, tok, first_token=True).n == N


def test_only_tasks_that_allow_it_lose_items(split_gpt2_tokenizer: Tok) -> None:
    prompts = (TaskPrompt("The capital of France is", " Paris", " Copenhagen"),) * 4
    strict = Task("mine", prompts)
    assert drop_multi_token_items([strict], [split_gpt2_tokenizer]) == ([strict], None)
    with pytest.raises(TaskEncodingError, match=r"every item's answer or distractor is split by a tokenizer \(of 4: 4 for tokenizer 'split-gpt2'\)"):
        drop_multi_token_items([Task("mine", prompts, drop_multi_token=True)], [split_gpt2_tokenizer])


def test_both_models_keep_the_same_items_across_tokenizers(split_gpt2_tokenizer: Tok, split_bert_tokenizer: Tok) -> None:
    causal, masked = get_task("facts", N, seed=0), get_task("facts", N, seed=0, masked=True)
    (a, b), note = drop_multi_token_items([causal, masked], [split_gpt2_tokenizer, split_bert_tokenizer])
    alone = {len(drop_multi_token_items([t], [tok])[0][0]) for t, tok in
             ((causal, split_gpt2_tokenizer), (masked, split_bert_tokenizer))}
    assert len(a) == len(b) <= min(alone) and len(a) > 0
    assert [p.answer for p in a.prompts] == [p.answer for p in b.prompts]
    assert [p.prompt + f" {MASK}." for p in a.prompts] == [p.prompt for p in b.prompts]
    assert note is not None and "'split-gpt2'" in note and "'split-bert'" in note


def test_prepare_tasks_gives_both_models_the_same_items_and_warns(split_pair: dict[str, Path]) -> None:
    teacher, student = load_model(str(split_pair["split-gpt2"])), load_model(str(split_pair["split-bert"]))
    with warnings.catch_warnings(record=True) as caught:  # two tokenizers, causal and masked
        warnings.simplefilter("always")
        (item,) = prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=N))
    (t_task, t_enc), (s_task, s_enc) = item.teacher, item.student
    assert t_enc.n == s_enc.n == len(t_task) == len(s_task) < N
    assert [p.answer for p in t_task.prompts] == [p.answer for p in s_task.prompts]
    assert any(f"of {N} items" in str(w.message) for w in caught)
    (item,) = prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=N, first_token=True))
    assert item.teacher[1].n == item.student[1].n == N  # --first-token keeps the study's behaviour
    (item,) = prepare_tasks(teacher, teacher, ["facts"], CompareOptions(n_prompts=N))  # causal: teacher-forced
    assert item.teacher[1].n == N and item.teacher[1].branches == 2
    (item,) = prepare_tasks(teacher, teacher, ["facts"], CompareOptions(n_prompts=N, edges="eap"))
    assert item.teacher[1].n == N and item.teacher[1].branches == 2  # edges score multi-token answers too


def test_lab_trains_and_evaluates_on_every_item_of_a_causal_tokenizer(split_pair: dict[str, Path]) -> None:
    """A causal lab keeps facts whole: a row is the prompt then every token of its answer, and the
    evaluation reads the teacher-forced metric on all items; a masked one drops the split items."""
    teacher = load_model(str(split_pair["split-gpt2"]))
    tok = teacher.tokenizer
    assert "facts" in ALL_TASKS
    data = DataRecipe(tasks=("facts",), task_prompts_per_task=300, task_prompts=(), corpus_max_chunks=4)
    pool = build_pool("causal", tok, data, seed=0, context=64)
    summary = pool.summary["tasks"]["facts"]
    rows = [r for r in pool.rows if r.task == "facts"]
    assert summary["rows"] == len(rows) == 300 and summary["multi_token_dropped"] == 0
    assert any(r.answer_len > 1 for r in rows) and any(r.answer_len == 1 for r in rows)
    for row in rows[:40]:  # prompt then its whole answer, which ends the row
        text = tok.decode(row.ids)
        rel = next(rel for rel, (tpl, _) in RELATIONS.items() if text.startswith(tpl.split("{}")[0]))
        subject = _subject(rel, tok.decode(row.ids[:row.answer_pos]))
        assert tok.decode(row.ids[row.answer_pos:]) == " " + ANSWER[rel, subject]
        assert row.answer_pos + row.answer_len == len(row.ids)
        assert row.answer_len == len(tok.tokenize(" " + ANSWER[rel, subject]))
    ld = logit_diffs(teacher.model, tok, "facts", N, 0, masked=False)
    assert ld.numel() == N
    result = evaluate_tasks(teacher.model, tok, "causal", ("facts", "numerals"), n_prompts=N)
    assert result["facts"]["n_prompts"] == N and "dropped" not in result["facts"] and result["facts"]["multi_token"]
    assert "multi_token" not in result["numerals"] and result["numerals"]["n_prompts"] == N
    assert "teacher-forced log-probability difference" in _note(result["facts"])  # the model card says so

    bert = load_model(str(split_pair["split-bert"]))  # a masked LM scores one [MASK]: split items are dropped
    masked_pool = build_pool("masked", bert.tokenizer, data, seed=0, context=64)
    kept = len(drop_multi_token_items([training_prompts("facts", 300, 0, True)], [bert.tokenizer])[0][0])
    assert 0 < masked_pool.summary["tasks"]["facts"]["rows"] == kept < 300
    result = evaluate_tasks(bert.model, bert.tokenizer, "masked", ("facts",), n_prompts=N)
    kept = len(drop_multi_token_items([get_task("facts", N, 0, True)], [bert.tokenizer])[0][0])
    assert result["facts"]["n_prompts"] == kept and result["facts"]["dropped"] == N - kept
    assert f"on the {kept} prompts kept ({N - kept} have an answer" in _note(result["facts"])
    other = DataRecipe(tasks=("successor",), task_prompts_per_task=8, task_prompts=(), corpus_max_chunks=2)
    with pytest.raises(LabError, match=r"'successor': answer is not a single token.*leave 'successor' out of the training tasks"):
        build_pool("masked", bert.tokenizer, other, seed=0, context=64)  # any other split answer: one line, by name


def test_distil_on_split_answers_completes_and_its_card_reports_them(split_pair: dict[str, Path], tmp_path: Path) -> None:
    """`distil` from a teacher whose tokenizer splits facts' answers: trains on the whole table
    (every answer token in the loss) and the card evaluates facts teacher-forced, nothing dropped."""
    from circuitdiff.lab import DistillRecipe, OptimRecipe, distil

    data = DataRecipe(tasks=("facts",), task_prompts_per_task=40, task_prompts=(), corpus_max_chunks=4)
    recipe = DistillRecipe(layers=(0,), data=data, optim=OptimRecipe(steps=2, batch_size=4, warmup_steps=1))
    result = distil(split_pair["split-gpt2"], recipe, tmp_path / "s", progress=False, eval_prompts=16)
    assert result.completed
    report = json.loads((tmp_path / "s" / "lab_report.json").read_text())
    assert report["data"]["tasks"]["facts"] == {"rows": 40, "too_long": 0, "eval_overlap_kept": 40, "multi_token_dropped": 0}
    for role in ("evaluation", "teacher_evaluation"):
        facts = report[role]["facts"]
        assert facts["n_prompts"] == 16 and facts["multi_token"] and "dropped" not in facts, facts
    assert np.isfinite(report["last_losses"]["lm"])
    card = (tmp_path / "s" / "README.md").read_text()
    assert "| facts |" in card and "teacher-forced log-probability difference" in card


def test_too_few_items_left_names_the_drop(split_pair: dict[str, Path]) -> None:
    teacher, student = load_model(str(split_pair["split-gpt2"])), load_model(str(split_pair["split-bert"]))
    n = 8  # 2 of its facts are opposites (kept), 6 are not
    assert sum(p.template == "facts-opposite" for p in get_task("facts", n, 0).prompts) == 2
    with pytest.raises(TaskFileError, match=rf"has 2 prompts; circuitdiff needs at least 4 \(facts: dropped 6 of {n}"), \
            pytest.warns(UserWarning, match="dropped"):
        prepare_tasks(teacher, student, ["facts"], CompareOptions(n_prompts=n))  # a masked LM: one-token answers


HAND_POSITIONS = {  # prompt -> (subject, end) token positions, counted by hand
    "The capital of France is": (3, 4),  # The | capital | of | France | is
    "People in Japan speak": (2, 3),  # People | in | Japan | speak
    "A young dog is called a": (2, 5),  # A | young | dog | is | called | a
    "The number of legs of a spider is": (6, 7),  # The | number | of | legs | of | a | spider | is
    "The opposite of up is": (3, 4),  # The | opposite | of | up | is
}


@pytest.mark.parametrize("masked", [False, True])
def test_facts_roles_are_the_subject_and_the_read_position(masked: bool, gpt2_tokenizer: Tok, bert_tokenizer: Tok) -> None:
    from circuitdiff.tasks.roles import role_positions

    tok, shift = (bert_tokenizer, 1) if masked else (gpt2_tokenizer, 0)  # BERT puts [CLS] first
    task = get_task("facts", len(FACTS), seed=0, masked=masked)
    end = f" {MASK}." if masked else ""
    rows = [i for i, p in enumerate(task.prompts) if p.prompt.removesuffix(end) in HAND_POSITIONS]
    assert len(rows) == len(HAND_POSITIONS)
    sub = task.select(rows)
    enc = encode_task(sub, tok)
    pos = role_positions(sub, enc, tok)
    assert set(pos) == {"subject", "end"}
    for r, p in enumerate(sub.prompts):
        subject, last = HAND_POSITIONS[p.prompt.removesuffix(end)]
        assert int(pos["subject"][r]) == subject + shift
        assert int(pos["end"][r]) == (last + 2 if masked else last)  # masked: [CLS] shift and the [MASK] after the last word


def test_every_subject_sits_in_its_templates_slot() -> None:
    """The first whole-word match of the subject is the {} slot, so the role points at it."""
    import re

    for f in FACTS:
        template = RELATIONS[f.relation][0]
        first = re.search(rf"(?<!\w){re.escape(f.subject)}(?!\w)", template.format(f.subject))
        assert first is not None and first.start() == template.index("{}"), f
