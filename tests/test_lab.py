"""Lab: student initialisation, distillation losses, resumable training, shipped pairs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
)

from circuitdiff.errors import CircuitDiffError
from circuitdiff.lab import (
    DataRecipe,
    DistillRecipe,
    LabError,
    OptimRecipe,
    TeacherRecipe,
    depth_pruned,
    distil,
    distillation_loss,
    init_student,
    load_index,
    logit_diffs,
    soft_target_kl,
    train_teacher,
)
from circuitdiff.lab.checkpoint import find_checkpoint, load_trainer_state
from circuitdiff.lab.corpus import JANEAUSTENR_DIR, load_corpus
from circuitdiff.lab.errors import CorpusError
from circuitdiff.lab.pairs import PAIRS_DIR, REQUIRED_TASKS
from circuitdiff.lab.tokenizer import single_token_failures, train_bpe, train_wordpiece
from circuitdiff.tasks import BUILTIN_TASKS, encode_task, get_task
from circuitdiff.tasks.encode import drop_multi_token_items

torch.manual_seed(0)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random init leaves LayerNorms at identity and biases at 0: perturb so a bad map shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _bert(n_layers: int = 4) -> BertForMaskedLM:
    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return _perturbed(BertForMaskedLM(cfg))  # type: ignore[return-value]


def _gpt2(n_layers: int = 4) -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=97, n_embd=32, n_layer=n_layers, n_head=4, n_positions=40,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return _perturbed(GPT2LMHeadModel(cfg))  # type: ignore[return-value]


def test_gpt2_student_copies_chosen_layers() -> None:
    teacher = _gpt2(4)
    student = init_student(teacher, [1, 3]).eval()
    assert student.config.n_layer == 2
    for j, i in enumerate([1, 3]):
        for (name, a), (_, b) in zip(student.transformer.h[j].state_dict().items(), teacher.transformer.h[i].state_dict().items()):
            assert torch.equal(a, b), name
    for part in ("wte", "wpe", "ln_f"):
        for a, b in zip(getattr(student.transformer, part).parameters(), getattr(teacher.transformer, part).parameters()):
            assert torch.equal(a, b)
    assert student.lm_head.weight.data_ptr() == student.transformer.wte.weight.data_ptr()
    # ground truth: running the teacher's own blocks 1 and 3 by hand gives the student's output
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        h = teacher.transformer.wte(x) + teacher.transformer.wpe(torch.arange(9))
        for i in (1, 3):
            out = teacher.transformer.h[i](h)
            h = out[0] if isinstance(out, tuple) else out
        ref = teacher.lm_head(teacher.transformer.ln_f(h))
        assert torch.allclose(student(input_ids=x).logits, ref, atol=1e-5)


def test_distilbert_student_matches_bert_with_same_layers() -> None:
    teacher = _bert(4)
    student = init_student(teacher, [0, 2]).eval()
    reference = depth_pruned(teacher, [0, 2]).eval()
    x = torch.randint(5, 97, (3, 11))
    att = torch.ones_like(x)
    att[1, 7:] = 0
    with torch.no_grad():
        s = student(input_ids=x, attention_mask=att, output_hidden_states=True)
        r = reference(input_ids=x, attention_mask=att, output_hidden_states=True)
        t = teacher(input_ids=x, attention_mask=att, output_hidden_states=True)
    assert torch.allclose(s.logits, r.logits, atol=1e-4)
    for hs, hr in zip(s.hidden_states, r.hidden_states):
        assert torch.allclose(hs, hr, atol=1e-5)
    # independent of depth_pruned: embeddings and layer 0 equal the full teacher's
    assert torch.allclose(s.hidden_states[0], t.hidden_states[0], atol=1e-5)
    assert torch.allclose(s.hidden_states[1], t.hidden_states[1], atol=1e-5)
    # and the tie between input embeddings and the output projection survives
    assert student.vocab_projector.weight.data_ptr() == student.distilbert.embeddings.word_embeddings.weight.data_ptr()


def test_bad_layer_choice_is_a_user_error() -> None:
    with pytest.raises(CircuitDiffError, match="out of range"):
        init_student(_gpt2(4), [0, 4])
    with pytest.raises(LabError, match="increasing"):
        init_student(_bert(4), [2, 1])


def test_kl_is_zero_with_zero_gradient_when_student_equals_teacher() -> None:
    teacher = _gpt2(2)
    student = copy.deepcopy(teacher).train()
    x = torch.randint(0, 97, (2, 8))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}
    with torch.no_grad():
        t_out = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    s_out = student(input_ids=x, attention_mask=batch["attention_mask"], output_hidden_states=True)
    loss, parts = distillation_loss(s_out, t_out, batch, causal=True, alpha_kl=5.0, alpha_lm=0.0, alpha_cos=1.0,
                                    temperature=2.0)
    assert abs(parts["kl"]) < 1e-6 and abs(parts["cos"]) < 1e-6
    loss.backward()
    assert max(float(p.grad.abs().max()) for p in student.parameters() if p.grad is not None) < 1e-5
    # and it is not trivially zero: different logits give a positive KL
    other = torch.randn_like(t_out.logits)
    assert float(soft_target_kl(other, t_out.logits, 2.0, batch["attention_mask"].bool())) > 0.1


def _tiny_recipe(corpus: Path, steps: int = 6) -> TeacherRecipe:
    data = DataRecipe(corpus=str(corpus), tasks=("ioi",), task_prompts_per_task=24, task_prompts=(), chunk_tokens=16)
    return TeacherRecipe(kind="causal", n_layers=2, d_model=16, n_heads=2, d_mlp=32, context=64, vocab_size=400,
                         data=data, optim=OptimRecipe(steps=steps, batch_size=4, warmup_steps=2, save_every=2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "a.txt").write_text("It is a truth universally acknowledged, that a single man in possession\n"
                                  "of a good fortune, must be in want of a wife.\n\n" * 20)
    (folder / "b.txt").write_text("The family of Dashwood had long been settled in Sussex.\n\n" * 20)
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Full-precision weights of the run's last checkpoint (the shipped folder is float16)."""
    return load_file(str(folder / "checkpoint" / "model.safetensors"))


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, corpus: Path) -> None:
    recipe = _tiny_recipe(corpus)
    kw = {"progress": False, "eval_prompts": 4, "keep_checkpoint": True}
    stopped = train_teacher(recipe, tmp_path / "a", stop_at=3, **kw)
    assert not stopped.completed
    ckpt = find_checkpoint(tmp_path / "a" / "checkpoint")
    assert ckpt is not None and load_trainer_state(ckpt)[0]["step"] == 3
    resumed = train_teacher(recipe, tmp_path / "a", **kw)
    straight = train_teacher(recipe, tmp_path / "b", **kw)
    assert resumed.completed and straight.completed and resumed.report["steps"] == 6
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    assert resumed.report["tokens"] == straight.report["tokens"]
    # a changed recipe must not silently continue someone else's checkpoint
    train_teacher(recipe, tmp_path / "c", stop_at=2, **kw)
    with pytest.raises(LabError, match="another recipe"):
        train_teacher(_tiny_recipe(corpus, steps=8), tmp_path / "c", **kw)
    # distillation resumes the same way
    d = DistillRecipe(data=recipe.data, optim=OptimRecipe(steps=4, batch_size=4, warmup_steps=1, save_every=2))
    assert not distil(tmp_path / "b", d, tmp_path / "s1", stop_at=2, **kw).completed
    s1 = distil(tmp_path / "b", d, tmp_path / "s1", **kw)
    s2 = distil(tmp_path / "b", d, tmp_path / "s2", **kw)
    assert s1.completed and s2.completed and s1.report["recipe"]["layers"] == [0]
    wa, wb = _weights(tmp_path / "s1"), _weights(tmp_path / "s2")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    card = (tmp_path / "s1" / "README.md").read_text()
    assert "alpha_kl" in card and "| ioi |" in card


SHIPPED = [("tiny-gpt2", "teacher", False), ("tiny-distilgpt2", "student", False),
           ("tiny-bert", "teacher", True), ("tiny-distilbert", "student", True)]


def test_pair_index_names_four_models() -> None:
    index = load_index()
    assert set(index) == {"tiny-gpt2", "tiny-bert"}
    assert index["tiny-gpt2"]["student"] == "tiny-distilgpt2" and index["tiny-bert"]["kind"] == "masked"
    assert {(e[r], r, e["kind"] == "masked") for e in index.values() for r in ("teacher", "student")} == set(SHIPPED)
    for entry in index.values():
        assert set(REQUIRED_TASKS) <= set(entry["default_tasks"])


@pytest.mark.parametrize(("folder", "role", "masked"), SHIPPED)
def test_shipped_pair_meets_accuracy_floor(folder: str, role: str, masked: bool) -> None:
    path = PAIRS_DIR / folder
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch.float32).eval()
    assert next(model.parameters()).dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path)
    floor = 0.9 if role == "teacher" else 0.8
    for task in REQUIRED_TASKS:
        ld = logit_diffs(model, tokenizer, task, 64, 0, masked)
        assert float((ld > 0).float().mean()) >= floor, (folder, task)
    for task in BUILTIN_TASKS:  # every answer and distractor is a single token (facts: of the items kept)
        (kept,), _ = drop_multi_token_items([get_task(task, 64, 0, masked)], [tokenizer])
        encode_task(kept, tokenizer)
    report = json.loads((path / "lab_report.json").read_text())
    assert report["role"] == role and "ioi" in (path / "README.md").read_text()


FACTS_N, FACTS_KEPT_MIN = 200, 150


@pytest.mark.parametrize("pair", ["tiny-gpt2", "tiny-bert"])
def test_shipped_pairs_are_taught_facts(pair: str) -> None:
    """The lab's tokenizers keep the fact words whole, so most facts items survive, and the
    index lists facts as passed exactly when both models pass it (measured here)."""
    from circuitdiff.tasks.facts import FACTS

    entry = load_index()[pair]
    masked = entry["kind"] == "masked"
    task = get_task("facts", FACTS_N, 0, masked)
    accuracy = {}
    for role in ("teacher", "student"):
        path = PAIRS_DIR / entry[role]
        tok = AutoTokenizer.from_pretrained(path)

        def one(word: str) -> bool:  # independent of circuitdiff's dropping: the word alone is one token
            return len(tok.tokenize(word.strip() if masked else word)) == 1

        kept = [p for p in task.prompts if one(p.answer) and one(p.distractor)]
        assert len(kept) >= FACTS_KEPT_MIN, (entry[role], len(kept))
        assert all(one(" " + f.subject) for f in FACTS), entry[role]  # the "subject" role is one token
        model = (AutoModelForMaskedLM if masked else AutoModelForCausalLM).from_pretrained(path, dtype=torch.float32)
        ld = logit_diffs(model.eval(), tok, "facts", FACTS_N, 0, masked)
        assert ld.numel() == len(kept)
        accuracy[role] = float((ld > 0).float().mean())
    passes = accuracy["teacher"] >= 0.9 and accuracy["student"] >= 0.8
    assert ("facts" in entry["tasks_passed"]) == passes, accuracy


def test_shipped_weights_are_small() -> None:
    total = sum(f.stat().st_size for f in PAIRS_DIR.rglob("*.safetensors"))
    assert 0 < total < 15 * 1024 * 1024


def test_corpus_sources(tmp_path: Path) -> None:
    paragraphs = load_corpus("sample")
    assert len(paragraphs) > 1000 and any("universally acknowledged" in p for p in paragraphs)
    (tmp_path / "x.txt").write_text("One line\nwrapped.\n\n_Second_ paragraph.\n")
    assert load_corpus(tmp_path) == ["One line wrapped.", "Second paragraph."]
    with pytest.raises(CorpusError):
        load_corpus(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no .txt"):
        load_corpus(empty)


def test_janeaustenr_corpus_when_installed() -> None:
    pytest.importorskip("rdata")
    if not JANEAUSTENR_DIR.is_dir():
        pytest.skip("apt-get install r-cran-janeaustenr")
    assert len(load_corpus("janeaustenr")) > 5000


@pytest.mark.parametrize("masked", [False, True])
def test_tokenizers_are_deterministic_and_keep_answers_whole(masked: bool) -> None:
    texts = load_corpus("sample")[:300]
    train = train_wordpiece if masked else train_bpe
    required = [" Mary", " Rachel", " September", " 1745" if masked else "45", " 99", " basketball"]
    first, second = (train(texts, 500, required, 64) for _ in range(2))
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert single_token_failures(first, required) == []
    if not masked:  # years split as the greater-than task expects: " 17" + "45"
        assert [w for w, _ in first.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" 1745")] == ["Ġ17", "45"]
