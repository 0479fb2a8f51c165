"""Mean and resample ablation stay inside a prompt's template, checked against plain forward hooks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from circuitdiff.interventions.ablation import Ablation, ActivationCache, Replacement
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.loading import LoadedModel
from circuitdiff.pipeline import run_model_on_task
from circuitdiff.tasks import Task, TaskPrompt, encode_task, load_jsonl_task
from tiny_models import tiny_model, word_tokenizer

# family -> (blocks, head input module = the attention output projection, MLP output module)
PATHS = {"gpt2": ("transformer.h", "attn.c_proj", "mlp"),
         "bert": ("bert.encoder.layer", "attention.output.dense", "output.dense")}
N_HEADS = 4


def two_template_task(masked: bool, n_per_template: int = 6, seed: int = 0) -> Task:
    """Template 'short' has 4 words, template 'long' 7, each with its own fixed words in fixed slots:
    position i of one template holds other tokens than position i of the other."""
    rng = random.Random(seed)
    skeletons = {"short": "w4 {} w5 {}", "long": "w40 w41 {} w42 {} w43 {}"}
    tail = " {mask}" if masked else ""

    def fill(skeleton: str) -> str:
        return skeleton.format(*(f"w{rng.randrange(10, 30)}" for _ in range(skeleton.count("{}")))) + tail

    prompts = []
    for i in range(2 * n_per_template):
        template = "short" if i % 2 == 0 else "long"
        answer, distractor = rng.sample(range(10, 30), 2)
        prompts.append(TaskPrompt(fill(skeletons[template]), f" w{answer}", f" w{distractor}",
                                  fill(skeletons[template]), template))
    return Task("two-templates", tuple(prompts), masked=masked)


def loud_model(family: str, seed: int = 3):
    """A tiny random model with weights scaled up, so effects stand far above float32 noise."""
    model = tiny_model(family, seed=seed)
    model.requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    return model


def ids_of(tokenizer, text: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids("[MASK]" if w == "{mask}" else w) for w in text.split()]


def hf_run(model, family: str, ids: list[int], read: int, record: dict | None = None,
           patch: tuple | None = None) -> torch.Tensor:
    """Logits at ``read`` for one unpadded prompt, recording or replacing one component by plain hooks.

    patch = (layer, head or None, value (seq, d)).
    """
    blocks, attn_path, mlp_path = PATHS[family]
    handles = []
    for layer, block in enumerate(model.get_submodule(blocks)):
        def pre(mod, args, layer=layer):
            x = args[0]
            if record is not None:
                record[(layer, "attn")] = x[0].detach().clone()
            if patch is not None and patch[0] == layer and patch[1] is not None:
                d = x.shape[-1] // N_HEADS
                x = x.clone()
                x[0, :, patch[1] * d:(patch[1] + 1) * d] = patch[2]
                return (x,) + args[1:]
            return None

        def post(mod, args, out, layer=layer):
            if record is not None:
                record[(layer, "mlp")] = out[0].detach().clone()
            if patch is not None and patch[0] == layer and patch[1] is None:
                return patch[2][None].to(out.dtype)
            return None

        handles.append(block.get_submodule(attn_path).register_forward_pre_hook(pre))
        handles.append(block.get_submodule(mlp_path).register_forward_hook(post))
    try:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, read]
    finally:
        for h in handles:
            h.remove()


def reference_effects(model, family: str, task: Task, tokenizer, per_template: bool) -> dict[tuple[int, int | None], float]:
    """Mean-ablation effects computed from scratch: per-template means (or the old pooled mean)."""
    clean = [ids_of(tokenizer, p.prompt) for p in task.prompts]
    corrupted = [ids_of(tokenizer, p.corrupted_prompt) for p in task.prompts]
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
    reads = [ids.index(mask_id) if task.masked else len(ids) - 1 for ids in clean]
    records = []
    for ids in corrupted:
        rec: dict = {}
        hf_run(model, family, ids, 0, record=rec)
        records.append(rec)
    n_layers = len(model.get_submodule(PATHS[family][0]))
    d_head = records[0][(0, "attn")].shape[-1] // N_HEADS

    def mean_for(i: int, key: tuple[int, str]) -> torch.Tensor:
        """Per-position mean of the reference activations prompt i is ablated with."""
        length = len(clean[i])
        if per_template:
            same = [r[key] for r, p in zip(records, task.prompts) if p.template == task.prompts[i].template]
            return torch.stack(same).mean(0)
        rows = []
        for pos in range(length):  # the old way: every prompt that reaches the position, any template
            rows.append(torch.stack([r[key][pos] for r in records if r[key].shape[0] > pos]).mean(0))
        return torch.stack(rows)

    def diff(logits: torch.Tensor, p: TaskPrompt) -> float:
        return float(logits[ids_of(tokenizer, p.answer)[0]] - logits[ids_of(tokenizer, p.distractor)[0]])

    base = [diff(hf_run(model, family, ids, r), p) for ids, r, p in zip(clean, reads, task.prompts)]
    out = {}
    for layer in range(n_layers):
        for head in [*range(N_HEADS), None]:
            key = (layer, "attn" if head is not None else "mlp")
            deltas = []
            for i, (ids, r, p) in enumerate(zip(clean, reads, task.prompts)):
                value = mean_for(i, key)
                if head is not None:
                    value = value[:, head * d_head:(head + 1) * d_head]
                deltas.append(diff(hf_run(model, family, ids, r, patch=(layer, head, value)), p) - base[i])
            out[(layer, head)] = sum(deltas) / len(deltas)
    return out


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_mean_ablation_equals_per_template_reference(family: str, one_torch_thread) -> None:
    model = loud_model(family)
    tokenizer = word_tokenizer()
    lm = LoadedModel("tiny", model, tokenizer, adapter_for(model))
    task = two_template_task(masked=family == "bert")
    run = run_model_on_task(lm, task, Ablation.MEAN)
    ours = {(e.layer, e.head): e.effect for e in run.effects}
    per_template = reference_effects(model, family, task, tokenizer, per_template=True)
    pooled = reference_effects(model, family, task, tokenizer, per_template=False)
    for key, expected in per_template.items():
        assert ours[key] == pytest.approx(expected, abs=1e-4), key
    moved = max(abs(pooled[k] - per_template[k]) for k in per_template)
    largest = max(abs(v) for v in per_template.values())
    assert moved > 0.1 * largest, "pooling across templates must matter here (else this test proves nothing)"
    assert not any("fewer than" in n.text for n in run.notes)  # six corrupted prompts per template: no warning


def test_resample_draws_from_the_same_template() -> None:
    groups = torch.tensor([0, 1, 0, 1, 2, 0, 2, 1])
    acts = torch.arange(8, dtype=torch.float32)[None, :, None, None].expand(1, 8, 3, 5).clone()
    cache = ActivationCache(acts[..., None, :].expand(1, 8, 3, 2, 5).clone(), acts, torch.ones(8, 3))
    rep = Replacement(Ablation.RESAMPLE, cache, n_base=8, seed=1, groups=groups)
    from circuitdiff.models.components import Component

    values = rep.values(Component(0, None), torch.arange(8))
    sources = values[:, 0, 0].long()
    assert torch.equal(groups[sources], groups)
    mean = Replacement(Ablation.MEAN, cache, n_base=8, groups=groups).values(Component(0, 1), torch.arange(8))
    expected = torch.tensor([float(torch.arange(8)[groups == g].float().mean()) for g in groups.tolist()])
    torch.testing.assert_close(mean[:, 1, 0], expected)
    thin = Replacement(Ablation.MEAN, cache, n_base=8, groups=groups, min_group=3)  # group 2 has two prompts
    values = thin.values(Component(0, 1), torch.arange(8))[:, 1, 0]
    expected[groups == 2] = 3.5  # the mean over all eight prompts
    torch.testing.assert_close(values, expected)
    draws = Replacement(Ablation.RESAMPLE, cache, n_base=8, seed=1, groups=groups, min_group=3)._source
    assert torch.equal(groups[draws][groups != 2], groups[groups != 2])


def test_templates_from_jsonl_or_token_length(tmp_path: Path) -> None:
    tokenizer = word_tokenizer()
    rows = [{"prompt": "w4 w5 w6", "answer": " w7", "distractor": " w8", "template": "a"},
            {"prompt": "w9 w10 w11", "answer": " w7", "distractor": " w8", "template": 2},
            {"prompt": "w9 w10 w11", "answer": " w7", "distractor": " w8", "template": "a"}]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    enc = encode_task(load_jsonl_task(path), tokenizer)
    assert enc.template_ids.tolist() == [0, 1, 0] and enc.template_names == ("a", "2")
    for r in rows:
        del r["template"]
    rows.append({"prompt": "w4 w5", "answer": " w7", "distractor": " w8"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    enc = encode_task(load_jsonl_task(path), tokenizer)
    assert enc.template_ids.tolist() == [0, 0, 0, 1] and enc.template_names == ("3 tokens", "2 tokens")


def test_thin_templates_are_warned(one_torch_thread) -> None:
    model = tiny_model("gpt2", seed=4)
    model.requires_grad_(False)
    lm = LoadedModel("tiny", model, word_tokenizer(), adapter_for(model))
    run = run_model_on_task(lm, two_template_task(masked=False, n_per_template=2), Ablation.MEAN)
    notes = [n.line for n in run.notes if n.code == "template.thin" and "fewer than 4 corrupted prompts" in n.text]
    assert len(notes) == 1 and "model 'tiny'" in notes[0]
    assert "'short' (2)" in notes[0] and "'long' (2)" in notes[0] and notes[0].startswith("two-templates: ")


def test_builtin_tasks_know_their_templates(gpt2_tokenizer) -> None:
    from circuitdiff.tasks import get_task

    ioi = encode_task(get_task("ioi", n_prompts=16), gpt2_tokenizer)
    assert len(ioi.template_names) >= 8  # eight templates, split further where lengths differ
    for g in range(len(ioi.template_names)):  # inside a group every prompt has the same length
        rows = ioi.template_ids == g
        assert ioi.attention_mask[rows].sum(1).unique().numel() == 1
    numerals = get_task("numerals", n_prompts=6)
    assert [p.template for p in numerals.prompts] == ["done", "lost", "born"] * 2


def test_thin_templates_without_corrupted_prompts_use_the_pooled_mean(one_torch_thread) -> None:
    """Reference = the clean prompts: a one-prompt template's own mean is the prompt itself (no effect at all),
    so it falls back to the mean over every prompt, and says so."""
    model = loud_model("gpt2")
    lm = LoadedModel("tiny", model, word_tokenizer(), adapter_for(model))
    prompts = tuple(TaskPrompt(" ".join(f"w{10 + i + j}" for j in range(3 + i % 2)), " w40", " w41", None, None)
                    for i in range(4))
    run = run_model_on_task(lm, Task("thin", prompts), Ablation.MEAN)
    assert max(abs(e.effect) for e in run.effects) > 1e-3
    notes = [n.line for n in run.notes if n.code == "template.thin" and "fewer than 4 reference prompts" in n.text]
    assert len(notes) == 1 and "'3 tokens' (2), '4 tokens' (2)" in notes[0] and "mean over all templates" in notes[0]


def test_null_draws_use_the_runs_template_aligned_ablation(one_torch_thread) -> None:
    """A random student of the null is ablated exactly like the student: per-template means."""
    from circuitdiff.null import null_draws, null_seed, random_like, task_tokens

    tokenizer = word_tokenizer()
    model = loud_model("gpt2")
    lm = LoadedModel("tiny", model, tokenizer, adapter_for(model))
    task = two_template_task(masked=False)
    enc = encode_task(task, tokenizer)
    draw = null_draws(lm, [enc], Ablation.MEAN, seed=0, n_null=1, n_check=4)[0][0]
    random_model = random_like(lm, null_seed(0, 0), task_tokens([enc])).model
    per_template = reference_effects(random_model, "gpt2", task, tokenizer, per_template=True)
    pooled = reference_effects(random_model, "gpt2", task, tokenizer, per_template=False)
    assert draw.checked is not None and len(draw.checked) == 4
    moved = 0.0
    for name, value in draw.checked.items():
        layer, rest = name[1:].split(".")
        key = (int(layer), None if rest == "MLP" else int(rest[1:]))
        assert value == pytest.approx(per_template[key], abs=1e-4), name
        moved = max(moved, abs(pooled[key] - per_template[key]))
    assert moved > 1e-3, "pooled and per-template means must differ here (else this test proves nothing)"
