"""CircuitLoss, the public circuit-preserving term: equal to the lab's, and where its gradient goes.

References: the lab's own loss function (``distil_loss_fn`` with its ``CircuitTerm``) on the
same batch; for the gradient, GPT-2's parameter layout written out here (a head's query, key
and value are its 32-column slices of ``c_attn``), checked with plain autograd.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from circuitdiff.integrations import CircuitLoss
from circuitdiff.lab import DataRecipe, DistillRecipe, OptimRecipe, init_student
from circuitdiff.lab.build import Teacher, distil_loss_fn
from circuitdiff.lab.circuit_loss import CircuitPair, CircuitTerm
from circuitdiff.models.loading import resolve
from test_circuit_loss import _batch, gpt2  # noqa: F401  (gpt2: the shipped teacher and tokenizer, a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_equals_the_labs_term_with_the_labs_pairs(gpt2, tmp_path) -> None:
    teacher, tok = gpt2
    student = init_student(teacher, [0, 2, 4])
    circuit = CircuitLoss(teacher, student, tok, ["ioi"], n_prompts=8)
    term = CircuitTerm(teacher, tok, ("ioi",), refresh=0, n_prompts=8, min_share=0.05, run_dir=tmp_path)
    assert circuit.pairs == term.pairs_at(student, 0) and circuit.pairs
    data = DataRecipe(tasks=("ioi",), task_prompts_per_task=8, task_prompts=(), corpus_max_chunks=8)
    recipe = DistillRecipe(alpha_circuit=1.0, data=data, optim=OptimRecipe(steps=1, batch_size=2, warmup_steps=1))
    batch = _batch(tok)
    _, parts = distil_loss_fn(Teacher(teacher, tok, "causal", "tiny-gpt2", "tiny-gpt2", True), recipe, term)(
        student, batch)
    value, outputs = circuit(**batch, return_outputs=True)
    assert float(value.detach()) == pytest.approx(parts["circuit"], abs=1e-6) and parts["circuit"] > 0
    plain = student(**batch)
    assert torch.allclose(outputs.loss, plain.loss)  # the recorded forward is the student's ordinary one
    assert list(circuit.parameters()) == [] and circuit.state_dict() == {}


def test_gradient_reaches_only_what_feeds_the_paired_student_component(gpt2) -> None:
    teacher, tok = gpt2
    teacher = T.AutoModelForCausalLM.from_pretrained(resolve("tiny-gpt2")[0])  # trainable: still no grad
    student = init_student(teacher, [0, 2, 4])
    torch.nn.init.normal_(student.transformer.h[1].attn.c_attn.weight, std=0.2)  # make the pair differ
    pair = CircuitPair(student="L1.H0", teacher="L3.H0", share=0.5, similarity=0.5, task="ioi")
    circuit = CircuitLoss(teacher, student, tok, pairs=[pair])
    batch = _batch(tok)
    circuit(batch["input_ids"], batch["attention_mask"]).backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in student.named_parameters()}
    # head 0 of layer 1: its query, key and value columns of c_attn (d_model 128, 4 heads of 32)
    head0 = torch.zeros(3 * 128, dtype=torch.bool)
    for start in (0, 128, 256):
        head0[start:start + 32] = True
    qkv = grads["transformer.h.1.attn.c_attn.weight"]
    assert qkv[:, head0].abs().sum() > 0 and qkv[:, ~head0].abs().max() == 0
    assert grads["transformer.h.1.attn.c_attn.bias"][~head0].abs().max() == 0
    downstream = [n for n in grads if n.startswith(("transformer.h.2.", "transformer.ln_f", "transformer.h.1.mlp",
                                                    "transformer.h.1.attn.c_proj", "transformer.h.1.ln_2"))]
    assert downstream and all(grads[n].abs().max() == 0 for n in downstream)
    upstream = ["transformer.h.0.mlp.c_fc.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.ln_1.weight"]
    assert all(grads[n].abs().sum() > 0 for n in upstream)
