"""The circuit-preserving loss: linear CKA against numpy, and the term really in the training loss.

References written here: linear CKA in its Gram-matrix (HSIC) form in float64 numpy, and
component outputs read with plain forward hooks on the real modules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from circuitdiff.lab import DataRecipe, DistillRecipe, LabError, OptimRecipe, init_student
from circuitdiff.lab.build import Teacher, distil_loss_fn
from circuitdiff.lab.circuit_loss import CircuitPair, CircuitTargets, CircuitTerm, linear_cka
from circuitdiff.models.loading import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T and centring matrix H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


def test_linear_cka_matches_numpy_and_its_invariances() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    y = x @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(50, 5))
    got = float(linear_cka(torch.tensor(x), torch.tensor(y)))
    assert got == pytest.approx(numpy_cka(x, y), abs=1e-5)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert float(linear_cka(torch.tensor(x), torch.tensor(3 * x @ q + 7))) == pytest.approx(1.0, abs=1e-5)
    xt = torch.tensor(x, requires_grad=True)
    linear_cka(xt, torch.tensor(y)).backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0


def _recipe(alpha: float) -> DistillRecipe:
    data = DataRecipe(tasks=("ioi",), task_prompts_per_task=8, task_prompts=(), corpus_max_chunks=8)
    return DistillRecipe(alpha_circuit=alpha, data=data, optim=OptimRecipe(steps=1, batch_size=2, warmup_steps=1))


def _term(tmp_path, teacher: torch.nn.Module, tok: object, pairs: tuple[CircuitPair, ...]) -> CircuitTerm:
    """A term whose pairs are given (as if chosen at step 0), so no analysis runs."""
    term = CircuitTerm(teacher, tok, ("ioi",), refresh=0, n_prompts=8, min_share=0.05, run_dir=tmp_path)
    term.history = [CircuitTargets(0, pairs)]
    return term


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


def _batch(tok: object) -> dict[str, torch.Tensor]:
    enc = tok(["Then, Mary and John went to the store. John gave a drink to", "one two three four five six"],
              return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


@pytest.fixture(scope="module")
def gpt2() -> tuple[torch.nn.Module, object]:
    folder = resolve("tiny-gpt2")[0]
    model = T.AutoModelForCausalLM.from_pretrained(folder).eval().requires_grad_(False)
    tok = T.AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    return model, tok


def test_causal_loss_includes_the_term_and_its_gradient_reaches_only_upstream(gpt2, tmp_path) -> None:
    teacher, tok = gpt2
    t = Teacher(teacher, tok, "causal", "tiny-gpt2", "tiny-gpt2", True)
    pair = CircuitPair(student="L1.H0", teacher="L3.H0", share=0.5, similarity=0.5, task="ioi")
    student = init_student(teacher, [0, 2, 4])
    torch.nn.init.normal_(student.transformer.h[1].attn.c_attn.weight, std=0.2)  # make the pair differ
    batch = _batch(tok)
    with_term, parts = distil_loss_fn(t, _recipe(2.0), _term(tmp_path, teacher, tok, (pair,)))(student, batch)
    without, _ = distil_loss_fn(t, _recipe(0.0), None)(student, batch)
    # the reference: the two heads' outputs by plain hooks on the real c_proj inputs, CKA in numpy
    seen = {}
    def grab(key, head):
        def hook(module, args):
            seen[key] = args[0][..., head * 32:(head + 1) * 32].detach()
        return hook
    h1 = student.transformer.h[1].attn.c_proj.register_forward_pre_hook(grab("s", 0))
    h2 = teacher.transformer.h[3].attn.c_proj.register_forward_pre_hook(grab("t", 0))
    with torch.no_grad():
        student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h1.remove(), h2.remove()
    keep = batch["attention_mask"].bool()
    expected = 1 - numpy_cka(seen["s"][keep].double().numpy(), seen["t"][keep].double().numpy())
    assert parts["circuit"] == pytest.approx(expected, abs=1e-4) and expected > 0.01
    assert float((with_term - without).detach()) == pytest.approx(2.0 * expected, abs=1e-4)
    g_with, g_without = _grads(student, with_term), _grads(student, without)
    diff = {n: (g_with[n] - g_without[n]).abs().max().item() for n in g_with}
    assert diff["transformer.h.1.attn.c_attn.weight"] > 1e-6  # the matched head's own weights
    assert diff["transformer.h.0.mlp.c_fc.weight"] > 1e-6  # and what feeds it
    assert max(v for n, v in diff.items() if n.startswith("transformer.h.2.")) < 1e-7  # nothing downstream
    zero, _ = distil_loss_fn(t, _recipe(0.0), _term(tmp_path, teacher, tok, (pair,)))(student, batch)
    assert torch.equal(zero.detach(), without.detach())  # weight 0: no term at all


def test_masked_path_distilbert_gets_the_term(tmp_path) -> None:
    folder = resolve("tiny-bert")[0]
    teacher = T.AutoModelForMaskedLM.from_pretrained(folder).eval().requires_grad_(False)
    tok = T.AutoTokenizer.from_pretrained(folder)
    t = Teacher(teacher, tok, "masked", "tiny-bert", "tiny-bert", True)
    student = init_student(teacher, [0, 2, 4])
    torch.nn.init.normal_(student.distilbert.transformer.layer[0].attention.v_lin.weight, std=0.2)
    pair = CircuitPair(student="L0.MLP", teacher="L1.MLP", share=0.5, similarity=0.5, task="ioi")
    enc = tok(["paris is the capital of [MASK] .", "one two [MASK] four"], return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    labels[enc["input_ids"] == tok.mask_token_id] = 1
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    recipe = DistillRecipe(alpha_circuit=1.0, data=_recipe(1.0).data, optim=_recipe(1.0).optim)
    loss, parts = distil_loss_fn(t, recipe, _term(tmp_path, teacher, tok, (pair,)))(student, batch)
    base, _ = distil_loss_fn(t, _recipe(0.0), None)(student, batch)
    assert parts["circuit"] > 0 and float((loss - base).detach()) == pytest.approx(parts["circuit"], abs=1e-5)
    g = _grads(student, loss)
    assert g["distilbert.transformer.layer.0.attention.v_lin.weight"].abs().sum() > 0


def test_bad_circuit_options_are_lab_errors() -> None:
    with pytest.raises(LabError, match="alpha_circuit"):
        DistillRecipe(alpha_circuit=-1.0)
    with pytest.raises(LabError, match="circuit_tasks"):
        DistillRecipe(alpha_circuit=1.0, circuit_tasks=())


def test_refreshes_reuse_the_frozen_teachers_runs(gpt2, tmp_path, monkeypatch) -> None:
    """Choosing pairs again on the current student runs the student only; the choice equals a fresh one."""
    import circuitdiff.compare as compare_module

    teacher, tok = gpt2
    names: list[str] = []
    real = compare_module.run_model_on_task

    def spy(lm: object, *args: object, **kwargs: object) -> object:
        names.append(lm.name)  # type: ignore[attr-defined]
        return real(lm, *args, **kwargs)

    monkeypatch.setattr(compare_module, "run_model_on_task", spy)
    student = init_student(teacher, [0, 2, 4])
    term = CircuitTerm(teacher, tok, ("ioi",), refresh=2, n_prompts=8, min_share=0.05, run_dir=tmp_path)
    first = term.pairs_at(student, 0)
    with torch.no_grad():
        student.transformer.h[1].mlp.c_proj.weight.mul_(3.0)  # as if trained: the choice may change
    second = term.pairs_at(student, 2)
    assert names == ["teacher", "student", "student"]
    fresh = CircuitTerm(teacher, tok, ("ioi",), refresh=0, n_prompts=8, min_share=0.05, run_dir=tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    assert second == fresh.pairs_at(student, 2) and first
    assert [h.step for h in term.history] == [0, 2]
