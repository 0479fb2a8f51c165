"""Multi-token answers: the metric is the difference of teacher-forced summed log-probabilities.

Every reference here is written in the test: plain Hugging Face forwards of prompt + continuation,
``log_softmax`` and sums; ablations by plain forward hooks on the real modules (written-out module
paths, not the adapters'); attribution by autograd on that plain metric. One-token tasks keep the
numbers the previous commit produced on the shipped pairs (recorded in one_token_numbers.json).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitdiff.circuits.buckets import circuit_evaluator
from circuitdiff.errors import TaskEncodingError
from circuitdiff.interventions.ablation import Ablation, Replacement
from circuitdiff.interventions.attribution import attribute
from circuitdiff.interventions.edge_methods import EdgeMethod
from circuitdiff.interventions.exact import exact_sweep
from circuitdiff.interventions.kernels import fast_kernels
from circuitdiff.interventions.readout import read_metric
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.pipeline import batches, clean_pass, run_model_on_task, task_replacement
from circuitdiff.tasks import Task, TaskPrompt, encode_task
from tiny_models import tiny_model, word_tokenizer

CAUSAL = ("gpt2", "llama", "gpt_neox")
MODULES = {  # (attention output projection, MLP output layer) per block, written out here
    "gpt2": ("transformer.h.{}.attn.c_proj", "transformer.h.{}.mlp"),
    "llama": ("model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp"),
    "gpt_neox": ("gpt_neox.layers.{}.attention.dense", "gpt_neox.layers.{}.mlp"),
}
D_HEAD, N_HEADS, N_LAYERS = 8, 4, 2


def words(rng: random.Random, k: int) -> str:
    return "".join(f" w{rng.randrange(10, 50)}" for _ in range(k))


def multi_task(n: int = 6, seed: int = 0) -> Task:
    """One template of five words; answers and distractors of 1-4 words (tokens), lengths differing in one batch."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        answer = words(rng, 1 + i % 4)
        distractor = words(rng, 1 + (i + 2) % 3)
        while distractor.split() == answer.split():
            distractor = words(rng, 1 + (i + 2) % 3)
        prompts.append(TaskPrompt(words(rng, 5).lstrip(), answer, distractor, template="t"))
    return Task("multi", tuple(prompts))


@pytest.fixture(scope="module", params=CAUSAL)
def saved(request, tmp_path_factory) -> tuple[str, Path]:
    """A tiny model with its weights scaled up, so that every component's effect stands far above rounding."""
    model = tiny_model(request.param, seed=5)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return request.param, folder


def _ids(text: str) -> list[int]:
    return word_tokenizer()(text)["input_ids"]


def reference_logprob(model: torch.nn.Module, prompt: str, continuation: str) -> float:
    """sum_k log p(c_k | prompt, c_<k) from one plain forward of prompt + continuation, float64."""
    p, c = _ids(prompt), _ids(continuation)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
    logp = logits.log_softmax(-1)
    return float(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(c)))


def reference_metric(model: torch.nn.Module, task: Task) -> np.ndarray:
    return np.array([reference_logprob(model, p.prompt, p.answer) - reference_logprob(model, p.prompt, p.distractor)
                     for p in task.prompts])


def test_metric_equals_teacher_forced_log_probabilities(saved, one_torch_thread) -> None:
    lm = load_model(str(saved[1]))
    task = multi_task()
    enc = encode_task(task, lm.tokenizer)
    assert enc.branches == 2 and sorted({int(n) for n in enc.answer_tokens.ge(0).sum(1)}) == [1, 2, 3, 4]
    batch, _ = batches(enc, lm.device)
    clean = clean_pass(lm, batch)
    np.testing.assert_allclose(clean.logit_diff, reference_metric(lm.model, task), atol=1e-3, rtol=0)
    with fast_kernels(lm.adapter):  # the sweeps' unpatched pass (last MLP at the continuation positions only)
        assert np.array_equal(read_metric(lm.adapter, batch).double().numpy(), clean.logit_diff)
    answer_p = np.exp([reference_logprob(lm.model, p.prompt, p.answer) for p in task.prompts])
    np.testing.assert_allclose(clean.answer_prob, answer_p, rtol=1e-4)


def test_shared_first_token_scores_the_second_alone(saved, one_torch_thread) -> None:
    """Answer and distractor share their first token: the metric is the logit difference of their second
    tokens after prompt + the shared one (both log-sum-exps and the shared token's log-probability cancel)."""
    lm = load_model(str(saved[1]))
    task = Task("shared", (TaskPrompt("w11 w12 w13", " w20 w21", " w20 w22"),
                           TaskPrompt("w14 w15 w16 w17", " w30 w31", " w30 w32 w33")))
    batch, _ = batches(encode_task(task, lm.tokenizer), lm.device)
    got = clean_pass(lm, batch).logit_diff
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([_ids("w11 w12 w13 w20")])).logits[0, -1].double()
    (w21,), (w22,) = _ids(" w21"), _ids(" w22")
    assert got[0] == pytest.approx(float(logits[w21] - logits[w22]), abs=1e-4)
    second = reference_metric(lm.model, task)[1]  # a longer distractor: its later token counts too
    assert got[1] == pytest.approx(second, abs=1e-4)


FINAL_NORM = {"gpt2": "transformer.ln_f", "llama": "model.norm", "gpt_neox": "gpt_neox.final_layer_norm"}


@pytest.mark.parametrize("position, moves", [(2, False), (3, True)], ids=["shared-token", "second-token"])
def test_crafted_shared_first_token(saved, position: int, moves: bool, one_torch_thread) -> None:
    """A crafted model: its final hidden state at one position pushed far off by a hook on the final norm. At the
    position that predicts the shared first token (2, the last prompt token) the push changes that token's
    log-probability identically in both branches, so the metric must not move; at the next one it must."""
    family, path = saved
    lm = load_model(str(path))
    task = Task("shared", (TaskPrompt("w11 w12 w13", " w20 w21", " w20 w22"),))
    batch, _ = batches(encode_task(task, lm.tokenizer), lm.device)
    before = clean_pass(lm, batch).logit_diff[0]
    push = 5.0 * torch.randn(lm.adapter.d_model, generator=torch.Generator().manual_seed(0))

    def crafted(_m, _a, output):
        out = output.clone()
        out[:, position] += push
        return out

    handle = lm.model.get_submodule(FINAL_NORM[family]).register_forward_hook(crafted)
    try:
        after = clean_pass(lm, batch).logit_diff[0]
    finally:
        handle.remove()
    if moves:
        assert abs(after - before) > 0.1
    else:
        assert after == pytest.approx(before, abs=1e-4)


def _plain_metric(lm: LoadedModel, family: str, task: Task, target, values) -> np.ndarray:
    """The reference metric with ``target`` = (layer, head or None) replaced by ``values(branch, row)``
    ((seq, d) or None = zero) through plain forward (pre-)hooks on the written-out modules."""
    return _plain_set_metric(lm, family, task, [target], lambda _t, b, r: values(b, r))


def _plain_set_metric(lm: LoadedModel, family: str, task: Task, targets, values) -> np.ndarray:
    """The reference metric with every (layer, head or None) of ``targets`` replaced at once by
    ``values(target, branch, row)``."""
    out = []
    for row, p in enumerate(task.prompts):
        total = 0.0
        for branch, sign, cont in ((0, 1.0, p.answer), (1, -1.0, p.distractor)):
            handles = [_install(lm, family, t, values(t, branch, row)) for t in targets]
            try:
                total += sign * reference_logprob(lm.model, p.prompt, cont)
            finally:
                for h in handles:
                    h.remove()
        out.append(total)
    return np.array(out)


def _install(lm: LoadedModel, family: str, target, value):
    """A plain hook replacing ``target`` = (layer, head or None) by ``value`` ((seq, d); None = zero)."""
    head_out, mlp_out = MODULES[family]
    layer, head = target

    def pre(_m, args):
        x = args[0].clone()
        n = x.shape[1] if value is None else min(x.shape[1], value.shape[0])  # the last token is read by nothing
        x[0, :n, head * D_HEAD:(head + 1) * D_HEAD] = 0 if value is None else value[:n].to(x)
        return (x, *args[1:])

    def post(_m, _a, output):
        y = output.clone()
        n = y.shape[1] if value is None else min(y.shape[1], value.shape[0])
        y[0, :n] = 0 if value is None else value[:n].to(y)
        return y

    module = lm.model.get_submodule((head_out if head is not None else mlp_out).format(layer))
    return module.register_forward_pre_hook(pre) if head is not None else module.register_forward_hook(post)


def _plain_means(lm: LoadedModel, family: str, task: Task, enc) -> dict:
    """Per (component, branch): the mean over the template's rows of that branch of the activation at each
    position, over the rows that reach it (plain hooks; the test's own definition of the template mean)."""
    head_out, mlp_out = MODULES[family]
    batch, _ = batches(enc, lm.device)
    acts: dict = {}
    hooks = []
    for layer in range(N_LAYERS):
        hooks.append(lm.model.get_submodule(head_out.format(layer)).register_forward_pre_hook(
            lambda _m, a, layer=layer: acts.__setitem__(("h", layer), a[0].detach())))
        hooks.append(lm.model.get_submodule(mlp_out.format(layer)).register_forward_hook(
            lambda _m, _a, o, layer=layer: acts.__setitem__(("m", layer), o.detach())))
    try:
        with torch.no_grad():
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for h in hooks:
            h.remove()
    n, mask = len(batch), batch.attention_mask.double()
    means = {}
    for (kind, layer), a in acts.items():
        for branch in (0, 1):
            rows = slice(branch * n, (branch + 1) * n)
            m = mask[rows][..., None]
            mean = (a[rows].double() * m).sum(0) / m.sum(0).clamp_min(1)
            if kind == "m":
                means[(layer, None, branch)] = mean
            else:
                for head in range(N_HEADS):
                    means[(layer, head, branch)] = mean[:, head * D_HEAD:(head + 1) * D_HEAD]
    return means


@pytest.mark.parametrize("ablation", [Ablation.ZERO, Ablation.MEAN], ids=lambda a: a.value)
def test_every_component_ablated_against_plain_hooks(saved, ablation: Ablation, one_torch_thread) -> None:
    family, path = saved
    lm = load_model(str(path))
    task = multi_task()
    enc = encode_task(task, lm.tokenizer)
    batch, _ = batches(enc, lm.device)
    clean = clean_pass(lm, batch)
    replacement = task_replacement(ablation, clean.cache, enc, int(batch.input_ids.shape[0]), 0, False)
    components = lm.adapter.components()
    swept = exact_sweep(lm.adapter, batch, replacement, components).double().numpy()
    means = _plain_means(lm, family, task, enc) if ablation is Ablation.MEAN else {}
    for i, c in enumerate(components):
        expected = _plain_metric(lm, family, task, (c.layer, c.head), lambda b, _r, c=c: means.get((c.layer, c.head, b)))
        np.testing.assert_allclose(swept[i], expected, atol=1e-3, rtol=0, err_msg=c.name)
    assert np.median(np.abs(swept - clean.logit_diff[None]).max(1)) > 0.1  # the ablations move the metric


def test_attribution_against_plain_autograd(saved, one_torch_thread) -> None:
    """Zero-ablation attribution of every MLP: grad . (0 - act) of the plain teacher-forced metric, summed
    over both branches, and its baseline is the clean metric."""
    family, path = saved
    lm = load_model(str(path))
    task = multi_task(n=4)
    batch, _ = batches(encode_task(task, lm.tokenizer), lm.device)
    mlps = [c for c in lm.adapter.components() if c.head is None]
    effects, base = attribute(lm.adapter, batch, Replacement(Ablation.ZERO, None, int(batch.input_ids.shape[0])), mlps)
    np.testing.assert_allclose(base.double().numpy(), reference_metric(lm.model, task), atol=1e-4)
    _, mlp_out = MODULES[family]
    for j, c in enumerate(mlps):
        expected = []
        for p in task.prompts:
            total = 0.0
            for sign, cont in ((1.0, p.answer), (-1.0, p.distractor)):
                kept: list[torch.Tensor] = []

                def keep(_m, _a, output):  # the weights are frozen: the MLP output is a leaf of the graph
                    kept.append(output.detach().requires_grad_(True))
                    return kept[-1]

                handle = lm.model.get_submodule(mlp_out.format(c.layer)).register_forward_hook(keep)
                try:
                    ids, cs = _ids(p.prompt), _ids(cont)
                    logp = lm.model(input_ids=torch.tensor([ids + cs])).logits[0].log_softmax(-1)
                    sum(logp[len(ids) - 1 + k, t] for k, t in enumerate(cs)).backward()
                finally:
                    handle.remove()
                total += sign * float((kept[0].grad * -kept[0].detach()).sum())
            expected.append(total)
        np.testing.assert_allclose(effects[j].double().numpy(), expected, atol=1e-4, err_msg=c.name)


def test_one_token_numbers_unchanged(one_torch_thread) -> None:
    """Clean and ablated metrics on the shipped pairs, as the commit before multi-token answers gave them."""
    from circuitdiff.interventions.choices import Method
    from circuitdiff.tasks.registry import get_task

    recorded = json.loads((Path(__file__).parent / "one_token_numbers.json").read_text())
    for key in ("tiny-gpt2/ioi/mean/exact", "tiny-distilgpt2/greater-than/zero/attribution"):
        model, task_name, ablation, method = key.split("/")
        lm = load_model(model)
        run = run_model_on_task(lm, get_task(task_name, n_prompts=12, seed=0), Ablation(ablation),
                                method=Method(method), n_boot=50)
        assert np.abs(run.clean - np.array(recorded[key]["clean"])).max() <= 1e-6
        assert np.abs(run.ablated - np.array(recorded[key]["ablated"])).max() <= 1e-6


def test_multi_token_pipeline_runs_circuits_and_edges(saved, one_torch_thread) -> None:
    lm = load_model(str(saved[1]))
    task = multi_task(n=8)
    run = run_model_on_task(lm, task, Ablation.MEAN, n_boot=20)
    np.testing.assert_allclose(run.clean, reference_metric(lm.model, task), atol=1e-4)
    assert run.ablated.shape == (len(lm.adapter.components()), len(task))
    assert run.read_acts[lm.adapter.components()[0].name].shape[0] == len(task)
    enc = encode_task(task, lm.tokenizer)
    assert run.token_spans is not None  # the prompt's tokens are spanned, the continuation's are padding
    for r, p in enumerate(task.prompts):
        n_prompt, n_row = len(_ids(p.prompt)), int(enc.attention_mask[r].sum())
        assert (run.token_spans.spans[r, :n_prompt] >= 0).all() and (run.token_spans.spans[r, n_prompt:n_row] < 0).all()
    scored = run_model_on_task(lm, task, Ablation.MEAN, edges=EdgeMethod.EXACT, n_boot=5).edges
    last = lm.adapter.components()[-1]  # the last MLP's one edge, to the logits, is its node
    (i,) = [i for i, e in enumerate(scored.edges) if e.sender == last]
    assert scored.effects["exact"][i] == pytest.approx((run.ablated[-1] - run.base).mean(), abs=1e-5)
    # circuits need a clearly positive clean metric: each item's preferred continuation made its answer
    ref = reference_metric(lm.model, task)
    task = Task("preferred", tuple(p if m > 0 else TaskPrompt(p.prompt, p.distractor, p.answer, template=p.template)
                                   for p, m in zip(task.prompts, ref)))
    found = run_model_on_task(lm, task, Ablation.ZERO, circuit_thresholds=(0.2,), n_boot=5)
    (circuit,) = found.circuits  # faithfulness: the metric with everything outside the circuit zeroed, over clean
    outside = [(c.layer, c.head) for c in lm.adapter.components() if c.name not in circuit.components]
    ablated = _plain_set_metric(lm, saved[0], task, outside, lambda *_: None).mean()
    assert circuit.faithfulness == pytest.approx(ablated / reference_metric(lm.model, task).mean(), abs=1e-4)


def test_notes_name_the_metric_a_multi_token_task_reads(tmp_path: Path, one_torch_thread) -> None:
    """Each item's dispreferred continuation made its answer: the clean metric is negative, and the note says
    "clean log-prob difference" (a one-token task's says "clean logit difference", test_honest_numbers)."""
    folder = tmp_path / "gpt2"
    tiny_model("gpt2", seed=1).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    lm = load_model(str(folder))
    task = multi_task(n=8)
    ref = reference_metric(lm.model, task)
    task = Task("dispreferred", tuple(p if m < 0 else TaskPrompt(p.prompt, p.distractor, p.answer, template=p.template)
                                      for p, m in zip(task.prompts, ref)))
    run = run_model_on_task(lm, task, Ablation.ZERO, n_boot=5)
    assert run.multi_token and (run.clean < 0).all()
    (note,) = [n for n in run.notes if n.code == "metric.clean_not_positive"]
    assert note.text.startswith("clean log-prob difference -") and "negative" in note.text


def test_bad_multi_token_input_is_refused_by_name() -> None:
    tok = word_tokenizer()
    same = Task("same", (TaskPrompt("w11 w12", " w20  w21", " w20 w21"),))
    with pytest.raises(TaskEncodingError, match="answer and distractor are the same tokens.*' w20  w21'"):
        encode_task(same, tok)
    long = Task("long", (TaskPrompt("w11 w12 w13", " w20 w21 w22", " w23"),))
    with pytest.raises(TaskEncodingError, match=r"longer than the model's context \(4 tokens\)"):
        encode_task(long, tok, max_length=4)
    assert encode_task(long, tok, max_length=5).input_ids.shape[1] == 5
    with pytest.raises(TaskEncodingError, match=r"task 'empty': answer is empty \(prompt #1\)"):
        encode_task(Task("empty", (TaskPrompt("w11", " w20", " w21"), TaskPrompt("w11", " ", " w21"))), tok)
    masked = Task("m", (TaskPrompt("w11 {mask} w12", " w20 w21", " w22"),), masked=True)
    with pytest.raises(TaskEncodingError, match=r"answer is not a single token .*masked LM.*' w20 w21'"):
        encode_task(masked, tok)
    first = encode_task(long, tok, first_token=True)
    assert first.branches == 1 and first.answer_ids.tolist() == tok(" w20")["input_ids"]


@pytest.mark.parametrize("ablation", [Ablation.ZERO, Ablation.MEAN], ids=lambda a: a.value)
def test_circuit_sets_against_plain_hooks(saved, ablation: Ablation, one_torch_thread) -> None:
    """Sets of components ablated at once, by the circuit search's evaluator (stacked variants, prefixes of
    ablated states, width buckets), against plain hooks: the mean over prompts of the reference metric."""
    family, path = saved
    lm = load_model(str(path))
    task = multi_task(n=6)
    enc = encode_task(task, lm.tokenizer)
    batch, _ = batches(enc, lm.device)
    clean = clean_pass(lm, batch)
    replacement = task_replacement(ablation, clean.cache, enc, int(batch.input_ids.shape[0]), 0, False)
    by_name = {c.name: c for c in lm.adapter.components()}
    sets = [["L0.H1", "L1.MLP"], ["L0.MLP", "L1.H2", "L1.H3"], ["L1.H0"], ["L1.H1", "L1.MLP"], ["L1.H3"]]  # 3 from L1
    with fast_kernels(lm.adapter):
        evaluator = circuit_evaluator(lm.adapter, batch, replacement, memory_budget=1 << 20)
        got = evaluator.ablated([[by_name[n] for n in names] for names in sets])
        evaluator.prefix(frozenset())  # the clean prefix
        (_, state), = evaluator.extend([(frozenset(), by_name["L0.H2"])])  # records the state's prefix
        (extended, _), = evaluator.extend([(state, by_name["L1.MLP"])])  # starts from it
    means = _plain_means(lm, family, task, enc) if ablation is Ablation.MEAN else {}
    value = lambda t, b, _r: means.get((*t, b))  # noqa: E731
    for names, mean in zip(sets, got):
        targets = [(by_name[n].layer, by_name[n].head) for n in names]
        assert mean == pytest.approx(_plain_set_metric(lm, family, task, targets, value).mean(), abs=1e-3), names
    expected = _plain_set_metric(lm, family, task, [(0, 2), (1, None)], value).mean()
    assert extended == pytest.approx(expected, abs=1e-3)


def test_null_draw_on_a_multi_token_task(saved, one_torch_thread) -> None:
    """The calibrated null's draw: per-prompt read-outs, and its exact check equals the exact effect computed
    here from the plain-hook reference on the same random model."""
    from circuitdiff.null import null_draw, random_like, task_tokens

    family, path = saved
    lm = load_model(str(path))
    task = multi_task(n=6)
    enc = encode_task(task, lm.tokenizer)
    assert set(task_tokens([enc])) >= set(enc.answer_tokens[enc.answer_tokens >= 0].tolist())
    rand = random_like(lm, 3, task_tokens([enc]))
    draw = null_draw(rand, enc, Ablation.ZERO, seed=0, n_check=2)
    assert all(v.shape == (len(task), v.shape[1]) for v in draw.read_acts.values())
    by_name = {c.name: c for c in rand.adapter.components()}
    clean = reference_metric(rand.model, task)
    for name, effect in draw.checked.items():
        c = by_name[name]
        ablated = _plain_set_metric(rand, family, task, [(c.layer, c.head)], lambda *_: None)
        assert effect == pytest.approx((ablated - clean).mean(), abs=1e-4), name


def test_report_example_shows_each_models_continuation_tokens() -> None:
    from types import SimpleNamespace

    from circuitdiff.compare import task_example

    tok = word_tokenizer()
    task = multi_task(n=2)
    enc = encode_task(task, tok)
    lm = SimpleNamespace(tokenizer=tok)
    example = task_example(task, {"teacher": (lm, enc), "student": (lm, encode_task(task, tok, first_token=True))})
    first = task.prompts[0]
    teacher, student = example["continuations"]
    # the word-level tokenizer decodes a token without its leading space
    assert teacher == {"model": "teacher", "answer": first.answer.split(), "distractor": first.distractor.split()}
    assert student["answer"] == first.answer.split()[:1]  # cut to its first token
    assert "continuations" not in task_example(task, {"teacher": (lm, encode_task(task, tok, first_token=True))})
