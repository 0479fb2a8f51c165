"""Built-in task generators, the registry and JSONL task files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase as Tok

from circuitdiff.errors import TaskFileError
from circuitdiff.tasks import (
    BUILTIN_TASKS,
    MASK,
    get_task,
    load_jsonl_task,
    task_vocabulary,
    training_prompts,
    vocab,
)
from circuitdiff.tasks.numerals import KINDS
from circuitdiff.tasks.successor import SEQUENCES

ALL = sorted(BUILTIN_TASKS)
N = 96


# --- generators -----------------------------------------------------------------------------

def test_registry_has_the_required_tasks() -> None:
    assert {"ioi", "numerals", "greater-than", "successor", "induction"} <= set(BUILTIN_TASKS)
    for name, spec in BUILTIN_TASKS.items():
        assert spec.name == name and spec.description and spec.vocabulary
    assert BUILTIN_TASKS["ioi"].supports_masked and BUILTIN_TASKS["numerals"].supports_masked


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ALL)
def test_generators_deterministic_and_seeded(name: str, masked: bool) -> None:
    a = get_task(name, n_prompts=N, seed=3, masked=masked)
    assert a == get_task(name, n_prompts=N, seed=3, masked=masked)
    assert a.prompts != get_task(name, n_prompts=N, seed=4, masked=masked).prompts
    assert len(a) == N and a.masked is masked and a.has_corrupted
    # the masked variant is the same items with a mask slot
    other = get_task(name, n_prompts=N, seed=3, masked=not masked)
    assert [p.prompt.split()[:3] for p in a.prompts] == [p.prompt.split()[:3] for p in other.prompts]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ALL)
def test_prompt_shape(name: str, masked: bool) -> None:
    task = get_task(name, n_prompts=N, seed=0, masked=masked)
    for p in task.prompts:
        assert p.answer != p.distractor
        assert p.corrupted_prompt is not None and p.corrupted_prompt != p.prompt
        for text in (p.prompt, p.corrupted_prompt):
            assert text.count(MASK) == (1 if masked else 0)
            assert text == text.strip()
        if name == "greater-than" and not masked:
            assert re.fullmatch(r"\d\d", p.answer) and re.fullmatch(r"\d\d", p.distractor)
        else:
            assert p.answer.startswith(" ") and p.distractor.startswith(" ")
            assert p.answer[1:].strip() == p.answer[1:] != ""


def test_ioi_semantics() -> None:
    task = get_task("ioi", n_prompts=N, seed=1)
    orders = set()
    for p in task.prompts:
        words = re.findall(r"[A-Za-z]+", p.prompt)
        io, s = p.answer.strip(), p.distractor.strip()
        assert words.count(io) == 1 and words.count(s) == 2
        orders.add("ABBA" if words.index(io) < words.index(s) else "BABA")
        names = [w for w in re.findall(r"[A-Za-z]+", p.corrupted_prompt) if w in vocab.NAMES]
        assert len(names) == 3 and len(set(names)) == 3 and not {io, s} & set(names)
    assert orders == {"ABBA", "BABA"}


@pytest.mark.parametrize("name", ["numerals", "numerals-words", "numerals-months"])
def test_numerals_count_up_by_one(name: str) -> None:
    values = KINDS["digits" if name == "numerals" else name.split("-")[1]]
    task = get_task(name, n_prompts=N, seed=2)
    templates = set()
    for p in task.prompts:
        shown = [values.index(v) for v in re.findall(r" in (\w+)\.", p.prompt)]
        assert len(shown) == 4 and shown == list(range(shown[0], shown[0] + 4))
        assert values.index(p.distractor.strip()) == shown[-1]
        assert values.index(p.answer.strip()) == shown[-1] + 1
        broken = [values.index(v) for v in re.findall(r" in (\w+)\.", p.corrupted_prompt)]
        assert len(broken) == 4 and all(b != a + 1 for a, b in zip(broken, broken[1:], strict=False))
        templates.add(re.search(r" (done|lost|born) in", p.prompt).group(1))
    assert templates == {"done", "lost", "born"}
    assert task.prompts[0].prompt.split(" in ")[0].split()[0] in vocab.ITEMS


@pytest.mark.parametrize("masked", [False, True])
def test_greater_than_semantics(masked: bool) -> None:
    for p in get_task("greater-than", n_prompts=N, seed=5, masked=masked).prompts:
        start = int(re.search(r"from the year 17(\d\d)", p.prompt).group(1))
        ans, dis = int(p.answer.strip()[-2:]), int(p.distractor.strip()[-2:])
        assert dis <= start < ans <= 99 and dis >= 10
        assert "from the year 1701 " in p.corrupted_prompt
        if masked:
            assert p.answer == f" 17{ans:02d}" and p.prompt.endswith("to the year {mask}.")
        else:
            assert p.prompt.endswith("to the year 17")


def test_successor_semantics() -> None:
    lists = {words[0]: (words, wraps) for words, wraps in SEQUENCES}
    for p in get_task("successor", n_prompts=N, seed=6).prompts:
        shown = p.prompt.rstrip(",").split(", ")
        order, wraps = next(v for v in lists.values() if shown[0] in v[0])
        k = [order.index(w) for w in shown]
        assert all((b - a) % len(order) == 1 for a, b in zip(k, k[1:], strict=False))
        assert p.distractor.strip() == shown[-1]
        assert order.index(p.answer.strip()) == (k[-1] + 1) % len(order)
        corrupt = p.corrupted_prompt.rstrip(",").split(", ")
        assert sorted(corrupt) == sorted(shown) and corrupt[0] == shown[0] and corrupt != shown


def test_induction_semantics() -> None:
    for p in get_task("induction", n_prompts=N, seed=7).prompts:
        words = p.prompt.split()
        seq, rep = words[:8], words[8:]
        assert len(set(seq)) == 8 and 1 <= len(rep) <= 7 and rep == seq[:len(rep)]
        assert p.answer.strip() == seq[len(rep)] and p.distractor.strip() in seq
        cwords = p.corrupted_prompt.split()
        assert cwords[:8] == seq and len(cwords) == len(words) and not set(cwords[8:]) & set(seq)


# --- vocabulary: every word a single token in GPT-2 (" word") and BERT uncased ("word") ----

WORD_LISTS = {name: getattr(vocab, name) for name in (
    "NAMES", "PLACES", "OBJECTS", "ITEMS", "WEEKDAYS", "MONTHS", "NUMBER_WORDS", "NUMBERS",
    "EVENT_NOUNS", "COMMON_WORDS")}


@pytest.mark.parametrize("list_name", sorted(WORD_LISTS))
def test_word_lists_single_tokens(list_name: str, gpt2_tokenizer: Tok, bert_tokenizer: Tok) -> None:
    words = WORD_LISTS[list_name]
    assert len(set(words)) == len(words)
    bad_gpt2 = [w for w in words if len(gpt2_tokenizer.tokenize(" " + w)) != 1]
    bad_bert = [w for w in words if len(bert_tokenizer.tokenize(w)) != 1]
    assert bad_gpt2 == [] and bad_bert == []
    if list_name == "ITEMS":  # the first item starts the prompt, without a space
        assert [w for w in words if len(gpt2_tokenizer.tokenize(w)) != 1] == []


def test_two_digit_numbers_and_years(gpt2_tokenizer: Tok, bert_tokenizer: Tok) -> None:
    assert all(len(gpt2_tokenizer.tokenize(f" {n}")) == 1 for n in range(10, 100))
    # greater-than relies on " 17YY" -> " 17" + "YY" (GPT-2) and 17YY being one BERT word
    for yy in [1] + list(range(10, 100)):
        assert gpt2_tokenizer.tokenize(f" 17{yy:02d}") == ["Ġ17", f"{yy:02d}"]
        assert bert_tokenizer.tokenize(f"17{yy:02d}") == [f"17{yy:02d}"]


def test_task_vocabulary() -> None:
    assert "Mary" in task_vocabulary("ioi") and "store" in task_vocabulary("ioi")
    assert "5" in task_vocabulary("numerals") and "five" in task_vocabulary("numerals-words")
    assert "Thursday" in task_vocabulary("successor") and "apple" in task_vocabulary("induction")
    for name in ALL:
        words = task_vocabulary(name)
        assert len(words) == len(set(words)) and all(w == w.strip() for w in words)
    with pytest.raises(TaskFileError):
        task_vocabulary("nope")


def test_training_prompts_use_another_stream() -> None:
    train = training_prompts("ioi", 32, seed=0)
    assert train.prompts != get_task("ioi", 32, seed=0).prompts
    assert train == training_prompts("ioi", 32, seed=0)


# --- registry -------------------------------------------------------------------------------

def test_get_task_defaults_and_errors(tmp_path: Path) -> None:
    assert len(get_task("ioi")) == 64
    with pytest.raises(TaskFileError) as err:
        get_task("no-such-task")
    assert "ioi" in str(err.value) and "numerals" in str(err.value)
    with pytest.raises(TaskFileError):
        get_task("ioi", n_prompts=0)
    with pytest.raises(TaskFileError, match="not found"):
        get_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(TaskFileError, match="not a file"):
        get_task(str(tmp_path))


def test_masked_unsupported_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    spec = dataclasses.replace(BUILTIN_TASKS["induction"], supports_masked=False)
    monkeypatch.setitem(BUILTIN_TASKS, "induction", spec)
    with pytest.raises(TaskFileError, match="no masked variant"):
        get_task("induction", masked=True)
    assert not get_task("induction", n_prompts=4).masked


# --- JSONL files ----------------------------------------------------------------------------

def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rec(prompt: str = "When Mary and John left, John waved to", answer: str = " Mary",
         distractor: str = " John", **extra: object) -> str:
    return json.dumps({"prompt": prompt, "answer": answer, "distractor": distractor, **extra})


def test_jsonl_loads_with_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", [_rec(), "", "   ", _rec(answer=" Anna"), _rec()])
    task = get_task(str(path))
    assert task.name == "t.jsonl" and len(task) == 3 and not task.masked
    assert task.source_lines == (1, 4, 5) and task.prompts[1].answer == " Anna"
    assert not task.has_corrupted
    assert get_task(str(path), n_prompts=2).source_lines == (1, 4)
    assert len(get_task(str(path), n_prompts=100)) == 3


@pytest.mark.parametrize("bad, expect", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"prompt": "x", "answer": " a"}), "missing 'distractor'"),
    (json.dumps({"prompt": "x", "answer": 3, "distractor": " b"}), "'answer' must be a string"),
    (json.dumps({"prompt": "x", "answer": " a", "distractor": " a"}), "equals"),
    (json.dumps({"prompt": " ", "answer": " a", "distractor": " b"}), "'prompt' is empty"),
])
def test_jsonl_errors_name_the_line(tmp_path: Path, bad: str, expect: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [_rec(), _rec(), bad, _rec()])
    with pytest.raises(TaskFileError) as err:
        load_jsonl_task(path)
    msg = str(err.value)
    assert "line 3" in msg and expect in msg and "bad.jsonl" in msg and "\n" not in msg
    assert "line 1" not in msg and "line 4" not in msg


def test_jsonl_reports_several_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [_rec(), "oops", _rec(), "{}", ""])
    msg = str(pytest.raises(TaskFileError, load_jsonl_task, path).value)
    assert "line 2" in msg and "line 4" in msg


def test_jsonl_empty_file(tmp_path: Path) -> None:
    for text in ("", "\n  \n"):
        (tmp_path / "e.jsonl").write_text(text)
        with pytest.raises(TaskFileError, match="no prompts"):
            load_jsonl_task(tmp_path / "e.jsonl")


def test_jsonl_masked_detection_and_consistency(tmp_path: Path) -> None:
    m = "When Mary and John left, John waved to {mask}."
    task = load_jsonl_task(_write(tmp_path / "m.jsonl", [_rec(m), _rec(m)]))
    assert task.masked
    assert get_task(str(tmp_path / "m.jsonl"), masked=True).masked
    with pytest.raises(TaskFileError, match="line 2"):
        load_jsonl_task(_write(tmp_path / "mixed.jsonl", [_rec(m), _rec()]))
    with pytest.raises(TaskFileError, match="line 1"):
        load_jsonl_task(_write(tmp_path / "two.jsonl", [_rec(m + " {mask}"), _rec(m)]))
    with pytest.raises(TaskFileError, match="masked"):
        get_task(str(_write(tmp_path / "c.jsonl", [_rec()])), masked=True)


def test_jsonl_corrupted_all_or_none(tmp_path: Path) -> None:
    c = "When Anna and Luke left, Tom waved to"
    task = load_jsonl_task(_write(tmp_path / "c.jsonl", [_rec(corrupted_prompt=c)] * 2))
    assert task.has_corrupted and task.prompts[0].corrupted_prompt == c
    with pytest.raises(TaskFileError, match="line 2"):
        load_jsonl_task(_write(tmp_path / "p.jsonl", [_rec(corrupted_prompt=c), _rec()]))


def test_jsonl_unknown_keys_warn(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="source"):
        task = load_jsonl_task(_write(tmp_path / "u.jsonl", [_rec(source="wiki")]))
    assert len(task) == 1
