"""One read-out for every metric: dead and no-op components read exactly zero, in every family and dtype.

Ground truth by weight edits: a head whose columns of the attention output projection are zero, and an
MLP whose output layer (weight and bias) is zero, cannot change anything, so zero and mean ablation of
them must leave the metric bit for bit where the clean pass put it. A component patched with its own
clean activation (noising with corrupted prompts equal to the clean ones) must read zero too. Before the
read-out was one (the clean pass eager and in the model's dtype, sweeps under SDPA), bfloat16 read 1e-3.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.attribution import attribute
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.readout import read_metric
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.pipeline import batches, clean_pass, run_model_on_task
from circuitdiff.tasks import Task, TaskPrompt, encode_task
from tiny_models import FAMILIES

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEAD_HEAD, DEAD_MLP_LAYER = (0, 1), 1
# written out here, not taken from the adapters: (attention output projection, MLP output layer) per block
MODULES = {
    "gpt2": ("transformer.h.{}.attn.c_proj", "transformer.h.{}.mlp.c_proj"),
    "bert": ("bert.encoder.layer.{}.attention.output.dense", "bert.encoder.layer.{}.output.dense"),
    "distilbert": ("distilbert.transformer.layer.{}.attention.out_lin", "distilbert.transformer.layer.{}.ffn.lin2"),
    "llama": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
    "gpt_neox": ("gpt_neox.layers.{}.attention.dense", "gpt_neox.layers.{}.mlp.dense_4h_to_h"),
    "gemma2": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
    "granite": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
    "olmo2": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
    "phi3": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
    "starcoder2": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.c_proj"),
    "opt": ("model.decoder.layers.{}.self_attn.out_proj", "model.decoder.layers.{}.fc2"),
    "gptj": ("transformer.h.{}.attn.out_proj", "transformer.h.{}.mlp.fc_out"),
    "phi": ("model.layers.{}.self_attn.dense", "model.layers.{}.mlp.fc2"),
    "falcon": ("transformer.h.{}.self_attention.dense", "transformer.h.{}.mlp.dense_4h_to_h"),
}
D_HEAD = 32 // 4


def word_task(masked: bool, n: int = 8, seed: int = 0) -> Task:
    """Two templates of different lengths (so the sweep buckets and trims), corrupted = clean prompts."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        words = [f"w{rng.randrange(10, 40)}" for _ in range(4 if i % 2 else 7)]
        text = " ".join(words) + (" {mask}" if masked else "")
        answer, distractor = rng.sample(range(10, 40), 2)
        prompts.append(TaskPrompt(text, f" w{answer}", f" w{distractor}", text, "short" if i % 2 else "long"))
    return Task("words", tuple(prompts), masked=masked)


def dead_model(family: str, folder: Path) -> Path:
    """A saved tiny model with head DEAD_HEAD's output columns and MLP DEAD_MLP_LAYER's output layer zeroed."""
    from tiny_models import tiny_model, word_tokenizer

    model = tiny_model(family, seed=3)
    head_out, mlp_out = MODULES[family]
    with torch.no_grad():  # weights scaled up, so that effects stand far above rounding
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    layer, head = DEAD_HEAD
    sl = slice(head * D_HEAD, (head + 1) * D_HEAD)
    with torch.no_grad():
        proj = model.get_submodule(head_out.format(layer))
        if isinstance(proj, torch.nn.Linear):
            proj.weight[:, sl] = 0
        else:  # GPT-2's Conv1D stores (in, out)
            proj.weight[sl, :] = 0
        mlp = model.get_submodule(mlp_out.format(DEAD_MLP_LAYER))
        mlp.weight.zero_()
        if mlp.bias is not None:
            mlp.bias.zero_()
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, dead_model(request.param, tmp_path_factory.mktemp(request.param))


def _load(saved: tuple[str, Path], dtype: torch.dtype) -> LoadedModel:
    return load_model(str(saved[1]), dtype=dtype)


def _dead_rows(lm: LoadedModel) -> list[int]:
    names = {f"L{DEAD_HEAD[0]}.H{DEAD_HEAD[1]}", f"L{DEAD_MLP_LAYER}.MLP"}
    rows = [i for i, c in enumerate(lm.adapter.components()) if c.name in names]
    assert len(rows) == 2
    return rows


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ablation", [Ablation.ZERO, Ablation.MEAN], ids=lambda a: a.value)
def test_dead_components_read_exactly_zero(saved, dtype: torch.dtype, ablation: Ablation, one_torch_thread) -> None:
    lm = _load(saved, dtype)
    run = run_model_on_task(lm, word_task(lm.adapter.masked_lm), ablation, n_boot=10)
    dead = _dead_rows(lm)
    for i in dead:
        assert np.array_equal(run.ablated[i], run.clean), (lm.adapter.components()[i].name, run.ablated[i] - run.clean)
        assert run.effects[i].effect == 0.0
    live = [abs(e.effect) for i, e in enumerate(run.effects) if i not in dead]
    assert min(live) > 0 and max(live) > 1e-2, "live components must move the metric (else this proves nothing)"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_op_patch_reads_zero(saved, dtype: torch.dtype, one_torch_thread) -> None:
    """Noising with corrupted prompts equal to the clean ones patches each component with its own activation."""
    lm = _load(saved, dtype)
    run = run_model_on_task(lm, word_task(lm.adapter.masked_lm), Ablation.NOISING, n_boot=10)
    assert np.array_equal(run.corrupted, run.clean)
    assert np.array_equal(run.ablated, np.broadcast_to(run.clean, run.ablated.shape))
    assert all(e.effect == 0.0 for e in run.effects)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clean_metric_equals_the_sweeps_unpatched_read_out(saved, dtype: torch.dtype, one_torch_thread) -> None:
    """Bit for bit against the sweep's pass with nothing patched, and close to a float64 plain forward."""
    lm = _load(saved, dtype)
    task = word_task(lm.adapter.masked_lm)
    batch, _ = batches(encode_task(task, lm.tokenizer), lm.device)
    clean = clean_pass(lm, batch)
    with fast_kernels(lm.adapter):
        unpatched = read_metric(lm.adapter, batch).double().numpy()
    assert np.array_equal(clean.logit_diff, unpatched)
    # attribution's forward (with autograd) reads the same: its baseline is the null's and hybrid's reference
    _, attributed = attribute(lm.adapter, batch, Replacement(Ablation.ZERO, None, len(batch)), [])
    assert np.array_equal(clean.logit_diff, attributed.double().numpy())
    # the metric's meaning: the plain Hugging Face forward of a float64 copy (a different computation)
    twin = load_model(str(saved[1]), dtype=torch.float64).model
    with torch.no_grad():
        logits = twin(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    at = logits[torch.arange(len(batch)), batch.read_pos]
    expected = (at.gather(1, batch.answer_ids[:, None]) - at.gather(1, batch.distractor_ids[:, None]))[:, 0].numpy()
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    np.testing.assert_allclose(clean.logit_diff, expected, atol=tolerance * max(1.0, np.abs(expected).max()), rtol=0)
    assert clean.attention_read is not None  # eager attention weights, from their own pass
    np.testing.assert_allclose(clean.attention_read.sum(-1), 1.0, atol=1e-2)
