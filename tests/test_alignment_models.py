"""The alignment score's defining properties, on real (tiny) models run end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as T

from circuitdiff.analysis.pair import analyse_runs
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.loading import LoadedModel
from circuitdiff.pipeline import ModelTaskRun, run_model_on_task
from circuitdiff.tasks import get_task

N_HEADS, D_MODEL = 4, 32


def gpt2(tokenizer, n_layers: int, seed: int) -> T.GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = T.GPT2Config(n_layer=n_layers, n_head=N_HEADS, n_embd=D_MODEL, vocab_size=len(tokenizer), n_positions=128)
    return T.GPT2LMHeadModel(cfg).eval()


def loaded(model: torch.nn.Module, tokenizer, name: str) -> LoadedModel:
    model.requires_grad_(False)
    return LoadedModel(name, model, tokenizer, adapter_for(model))


def run(lm: LoadedModel) -> ModelTaskRun:
    task = get_task("induction", n_prompts=48, seed=0)
    return run_model_on_task(lm, task, Ablation.MEAN)


def permute_heads(model: T.GPT2LMHeadModel, perms: list[list[int]]) -> T.GPT2LMHeadModel:
    """A copy whose heads in layer l are reordered by perms[l]: new head j is old head perms[l][j]."""
    twin = copy.deepcopy(model)
    d_head = D_MODEL // N_HEADS
    with torch.no_grad():
        for block, perm in zip(twin.transformer.h, perms):
            idx = torch.cat([torch.arange(p * d_head, (p + 1) * d_head) for p in perm])
            qkv_w, qkv_b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: (d, 3d)
            cols = torch.cat([idx + k * D_MODEL for k in range(3)])
            qkv_w.copy_(qkv_w[:, cols].clone())
            qkv_b.copy_(qkv_b[cols].clone())
            block.attn.c_proj.weight.copy_(block.attn.c_proj.weight[idx].clone())
    return twin


@pytest.fixture(scope="module")
def teacher(gpt2_tokenizer) -> tuple[LoadedModel, ModelTaskRun]:
    lm = loaded(gpt2(gpt2_tokenizer, 3, seed=1), gpt2_tokenizer, "teacher")
    return lm, run(lm)


def test_model_against_itself_scores_exactly_one(teacher) -> None:
    _, t_run = teacher
    analysis = analyse_runs(t_run, t_run, same_tokens=True, n_boot=50)
    assert analysis.alignment["score"] == pytest.approx(1.0, abs=1e-9)
    assert analysis.alignment["ci"][0] == pytest.approx(1.0, abs=1e-6)
    assert all(m.student == m.teacher for m in analysis.matching)


def test_head_permuted_copy_scores_one_and_is_matched_back(teacher, gpt2_tokenizer) -> None:
    lm, t_run = teacher
    perms = [[2, 0, 3, 1], [1, 2, 3, 0], [3, 2, 1, 0]]
    twin = loaded(permute_heads(lm.model, perms), gpt2_tokenizer, "permuted")
    analysis = analyse_runs(t_run, run(twin), same_tokens=True, n_boot=20)
    assert analysis.alignment["score"] == pytest.approx(1.0, abs=1e-5)  # float32 noise only
    matched = {m.student: m.teacher for m in analysis.matching}
    for layer, perm in enumerate(perms):
        for new, old in enumerate(perm):
            assert matched[f"L{layer}.H{new}"] == f"L{layer}.H{old}"


def test_layer_subset_copy_with_silent_skipped_layers_scores_high(gpt2_tokenizer) -> None:
    model = gpt2(gpt2_tokenizer, 4, seed=2)
    with torch.no_grad():
        for skipped in (1, 3):  # these teacher layers write nothing to the residual stream
            block = model.transformer.h[skipped]
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    student = gpt2(gpt2_tokenizer, 2, seed=3)
    student.transformer.wte.load_state_dict(model.transformer.wte.state_dict())
    student.transformer.wpe.load_state_dict(model.transformer.wpe.state_dict())
    student.transformer.ln_f.load_state_dict(model.transformer.ln_f.state_dict())
    for new, old in enumerate((0, 2)):
        student.transformer.h[new].load_state_dict(model.transformer.h[old].state_dict())
    t_run = run(loaded(model, gpt2_tokenizer, "teacher"))
    s_run = run(loaded(student, gpt2_tokenizer, "student"))
    torch.testing.assert_close(torch.as_tensor(s_run.clean), torch.as_tensor(t_run.clean))  # same function
    analysis = analyse_runs(t_run, s_run, same_tokens=True, n_boot=20)
    assert analysis.alignment["score"] > 0.95


def test_random_student_scores_low(teacher, gpt2_tokenizer) -> None:
    _, t_run = teacher
    random_student = loaded(gpt2(gpt2_tokenizer, 2, seed=99), gpt2_tokenizer, "random")
    analysis = analyse_runs(t_run, run(random_student), same_tokens=True, n_boot=20)
    assert analysis.alignment["score"] < 0.3
