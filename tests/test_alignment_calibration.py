"""The alignment score's interval and chance level: weighted CKA, BCa, and the null's calibration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import transformers as T

from circuitdiff.analysis.bootstrap import (
    bca_interval,
    bootstrap_indices,
    jackknife_weights,
    percentile_interval,
    resample_weights,
)
from circuitdiff.analysis.cka import weighted_cka_matrix, zero_diagonal_gram
from circuitdiff.analysis.concentration import concentration_summary, effective_number
from circuitdiff.analysis.pair import analyse_runs
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.loading import LoadedModel
from circuitdiff.null import null_draws, random_like, task_tokens
from circuitdiff.pipeline import ModelTaskRun, run_model_on_task
from circuitdiff.tasks import encode_task, get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- weighted debiased CKA against brute force over distinct prompts -------------------------

def reference_weighted_hsic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Song's U-statistic written out: the kernel over 4-tuples of distinct prompts, tuples weighted by w."""
    k, l = x @ x.T, y @ y.T  # noqa: E741  (uncentred on purpose: the estimator must not care)
    num = den = 0.0
    for i, j, q, r in itertools.permutations(range(len(w)), 4):
        weight = w[i] * w[j] * w[q] * w[r]
        if weight == 0:
            continue
        # every ordering of the tuple is visited too, so the kernel needs no symmetrising here
        num += weight * (k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q])
        den += weight
    return num / den


def song_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC written out, then CKA: the point estimate's definition."""
    def hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
        n = len(k)
        k, l = k.copy(), l.copy()  # noqa: E741
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))
    kx, ky = x @ x.T, y @ y.T
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_weighted_cka_equals_brute_force_on_resamples_and_debiased_cka_on_all_prompts() -> None:
    rng = np.random.default_rng(0)
    n = 8
    xs = [rng.normal(size=(n, 3)), rng.normal(size=(n, 5))]
    ys = [xs[0][:, :2] + 0.5 * rng.normal(size=(n, 2)), rng.normal(size=(n, 4))]
    kt = np.stack([zero_diagonal_gram(x) for x in xs])
    ks = np.stack([zero_diagonal_gram(y) for y in ys])
    got = weighted_cka_matrix(kt, ks, np.ones(n))
    want = np.array([[song_debiased_cka(x, y) for y in ys] for x in xs])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for w in (np.bincount(bootstrap_indices(n, 1, seed=3)[0], minlength=n), np.r_[0.0, np.ones(n - 1)]):
        w = w.astype(np.float64)
        got = weighted_cka_matrix(kt, ks, w)
        assert np.count_nonzero(got) >= 3  # most pairs have positive self-HSIC: the comparison is not vacuous
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                hxx, hyy = reference_weighted_hsic(x, x, w), reference_weighted_hsic(y, y, w)
                want = np.clip(reference_weighted_hsic(x, y, w) / np.sqrt(hxx * hyy), -1, 1) if min(hxx, hyy) > 0 else 0.0
                assert got[i, j] == pytest.approx(want, abs=1e-12)


def test_weighted_cka_leaves_out_zero_weight_prompts_exactly() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    keep = np.r_[np.ones(7), np.zeros(3)]
    full = weighted_cka_matrix(zero_diagonal_gram(x)[None], zero_diagonal_gram(y)[None], keep)[0, 0]
    sub = weighted_cka_matrix(zero_diagonal_gram(x[:7])[None], zero_diagonal_gram(y[:7])[None], np.ones(7))[0, 0]
    assert full == pytest.approx(sub, abs=1e-12)


# --- BCa ------------------------------------------------------------------------------------

def noisy_effects(n_null: int, noise: float, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """4 components with effect -1 and ``n_null`` without any: |noise| biases the effective number."""
    rng = np.random.default_rng(0)
    effects = np.r_[np.full(4, -1.0), np.zeros(n_null)][:, None] + rng.normal(scale=noise, size=(4 + n_null, n_prompts))
    return effects, 3.0 + rng.normal(scale=0.3, size=n_prompts)


def test_bca_moves_a_biased_statistic_interval_onto_its_point() -> None:
    effects, clean = noisy_effects(20, 0.3, 64)
    iv = concentration_summary(effects, clean, n_boot=2000, seed=0)["effective_number"]
    boot = [effective_number(effects @ w) for w in resample_weights(bootstrap_indices(64, 2000, 0), 64)]
    assert np.mean(np.array(boot) > iv.point) > 0.9  # the point sits low in its bootstrap distribution
    lo, hi = percentile_interval(np.array(boot))
    assert iv is not None and iv.lo <= iv.point <= iv.hi
    assert iv.lo < lo and iv.hi < hi  # corrected downwards, towards the point


def test_no_interval_when_the_bias_exceeds_the_spread() -> None:
    """Under 2.5% of resamples below the point: no interval could contain it honestly."""
    effects, clean = noisy_effects(15, 0.25, 48)
    iv = concentration_summary(effects, clean, n_boot=2000, seed=0)["effective_number"]
    assert iv is not None and np.isfinite(iv.point) and np.isnan(iv.lo) and np.isnan(iv.hi)


def test_bca_of_an_unbiased_mean_is_close_to_the_percentile_interval() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    idx = bootstrap_indices(200, 4000, seed=0)
    boot, jack = x[idx].mean(1), jackknife_weights(200) @ x
    bca = bca_interval(x.mean(), boot, jack)
    pct = percentile_interval(boot)
    assert bca == pytest.approx(pct, abs=0.02)
    se = x.std(ddof=1) / np.sqrt(200)
    assert bca[0] == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)


# --- on models: an unrelated pair, the null's calibration, a model against itself ----------

N_PROMPTS = 40


def gpt2(tokenizer, n_layers: int, seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = T.GPT2Config(n_layer=n_layers, n_head=4, n_embd=32, vocab_size=len(tokenizer), n_positions=128)
    model = T.GPT2LMHeadModel(cfg).eval()
    model.requires_grad_(False)
    return LoadedModel(f"gpt2-{n_layers}L-s{seed}", model, tokenizer, adapter_for(model))


@pytest.fixture(scope="module")
def task():
    return get_task("induction", n_prompts=N_PROMPTS, seed=0)


@pytest.fixture(scope="module")
def teacher(gpt2_tokenizer, task) -> tuple[LoadedModel, ModelTaskRun]:
    lm = gpt2(gpt2_tokenizer, 3, seed=1)
    return lm, run_model_on_task(lm, task, Ablation.MEAN)


def test_unrelated_pair_point_inside_its_interval_and_mid_distribution(teacher, gpt2_tokenizer, task) -> None:
    _, t_run = teacher
    for seed in (11, 12):
        s_run = run_model_on_task(gpt2(gpt2_tokenizer, 2, seed=seed), task, Ablation.MEAN)
        al = analyse_runs(t_run, s_run, same_tokens=True, n_boot=400).alignment
        assert al["ci"][0] <= al["score"] <= al["ci"][1]
        assert 0.2 <= al["share_above_point"] <= 0.8  # resampling with duplicates fed as rows gives ~1.0
        assert al["n_boot"] == 400 and al["ci_method"] == "bca"


@pytest.fixture(scope="module")
def student_null(gpt2_tokenizer, task) -> tuple[LoadedModel, list]:
    student = gpt2(gpt2_tokenizer, 2, seed=5)
    enc = encode_task(task, gpt2_tokenizer)
    return student, null_draws(student, [enc], Ablation.MEAN, seed=0, n_null=10)[0]


def test_students_drawn_like_the_null_are_rarely_above_chance(teacher, student_null, task) -> None:
    _, t_run = teacher
    student, draws = student_null
    verdicts, scores = [], []
    tokens = task_tokens([encode_task(task, student.tokenizer)])
    for k in range(10):  # fresh seeds, not the null's own
        s_run = run_model_on_task(random_like(student, 500 + k, tokens), task, Ablation.MEAN)
        al = analyse_runs(t_run, s_run, same_tokens=True, null_draws=draws, n_boot=200).alignment
        verdicts.append(al["above_chance"])
        scores.append(al["score"])
    assert all(v is not None for v in verdicts)
    assert sum(verdicts) <= 2, (verdicts, scores)
    null = al  # every student above was scored against the same draws
    assert null["n_null"] == 10 and len(null["null_values"]) == 10
    assert null["null"] == pytest.approx(np.median(null["null_values"]))
    assert null["null"] <= null["null_q95"] <= max(null["null_values"])
    # the random students' scores fall in the null's range: the null is comparable with what it calibrates
    assert min(null["null_values"]) <= np.median(scores) <= max(null["null_values"])


def test_model_against_itself_is_above_chance(teacher, gpt2_tokenizer, task) -> None:
    lm, t_run = teacher
    draws = null_draws(lm, [encode_task(task, gpt2_tokenizer)], Ablation.MEAN, seed=0, n_null=10)[0]
    al = analyse_runs(t_run, t_run, same_tokens=True, null_draws=draws, n_boot=100).alignment
    assert al["score"] == pytest.approx(1.0, abs=1e-9)
    assert al["above_chance"] is True and al["null_q95"] < 0.9
    check = al["null_check"]
    assert check is not None and len(check["components"]) == 4
    assert abs(check["score_with_exact"] - check["score_estimated"]) < 0.02  # attribution is close on random models


def test_null_draws_are_seeded_and_distinct(gpt2_tokenizer, task) -> None:
    student = gpt2(gpt2_tokenizer, 2, seed=5)
    enc = encode_task(task, gpt2_tokenizer)
    a = null_draws(student, [enc], Ablation.MEAN, seed=0, n_null=2, n_check=0)[0]
    b = null_draws(student, [enc], Ablation.MEAN, seed=0, n_null=2, n_check=0)[0]
    np.testing.assert_array_equal(a[1].effects, b[1].effects)
    assert not np.allclose(a[0].effects, a[1].effects)


@pytest.mark.parametrize("ablation", [Ablation.MEAN, Ablation.ZERO, Ablation.DENOISING])
def test_null_draw_reads_match_a_plain_forward_hook(gpt2_tokenizer, ablation) -> None:
    """The read-position outputs a draw records equal a hook on the real c_proj input (heads) / MLP output."""
    student = gpt2(gpt2_tokenizer, 2, seed=5)
    task = get_task("ioi", n_prompts=12, seed=0)
    enc = encode_task(task, gpt2_tokenizer)
    draw = null_draws(student, [enc], ablation, seed=0, n_null=1, n_check=0)[0][0]
    model = random_like(student, 0, task_tokens([enc])).model  # draw 0 of seed 0: the same weights
    seen: dict[str, torch.Tensor] = {}
    hooks = [block.attn.c_proj.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"attn{i}", a[0]))
             for i, block in enumerate(model.transformer.h)]
    hooks += [block.mlp.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"mlp{i}", o))
              for i, block in enumerate(model.transformer.h)]
    with torch.no_grad():
        model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    for h in hooks:
        h.remove()
    rows = torch.arange(len(enc.input_ids))
    for layer in range(2):
        heads = seen[f"attn{layer}"][rows, enc.read_pos].view(len(rows), 4, 8)
        for head in range(4):
            np.testing.assert_allclose(draw.read_acts[f"L{layer}.H{head}"], heads[:, head].double().numpy(), atol=1e-5)
        np.testing.assert_allclose(draw.read_acts[f"L{layer}.MLP"], seen[f"mlp{layer}"][rows, enc.read_pos].double().numpy(),
                                   atol=1e-5)
    assert np.all(np.isfinite(draw.effects)) and np.any(draw.effects != 0)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_random_like_draws_like_a_fresh_construction(family) -> None:
    """Same parameter distributions as ``type(model)(config)``, same buffers, different draws per seed."""
    from tiny_models import tiny_model, word_tokenizer

    model = tiny_model(family, seed=0, d_model=64).eval()
    lm = LoadedModel("m", model, word_tokenizer(), adapter_for(model))
    torch.manual_seed(123)
    fresh = type(model)(model.config)
    every_row = range(model.config.vocab_size)
    a, b = random_like(lm, 1, every_row).model, random_like(lm, 2, every_row).model
    fresh.requires_grad_(False)
    params = dict(fresh.named_parameters())
    for name, p in a.named_parameters():
        ref = params[name]
        assert p.shape == ref.shape
        if ref.numel() > 100 and float(ref.std()) > 0:
            assert float(p.std()) == pytest.approx(float(ref.std()), rel=0.15), name
        else:
            assert float(p.abs().mean()) == pytest.approx(float(ref.abs().mean()), rel=0.15, abs=1e-6), name
    for (name, buf), (_, ref) in zip(a.named_buffers(), fresh.named_buffers()):
        assert torch.equal(buf, ref), name
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_random_like_draws_nothing_that_nothing_reads(gpt2_tokenizer, task) -> None:
    """Every weight but the input embedding equals the model class's own ``init_weights`` under the same
    seed with that embedding (and the LM head tied to it) left out; the head stays tied; of the embedding
    only the rows the tasks read are drawn, each the same whichever other rows are drawn and with the
    class's own spread (GPT-2: normal, std ``initializer_range``); the rest are zero."""
    student = gpt2(gpt2_tokenizer, 2, seed=5)
    with torch.device("meta"):
        reference = T.GPT2LMHeadModel(student.model.config)
    reference = reference.to_empty(device="cpu")
    reference.transformer.wte.weight._is_hf_initialized = True  # transformers' own skip mark
    torch.manual_seed(77)
    with torch.no_grad():
        reference.init_weights()
    tokens = task_tokens([encode_task(task, gpt2_tokenizer)])
    drawn = random_like(student, 77, tokens).model
    assert drawn.lm_head.weight is drawn.transformer.wte.weight
    expected = dict(reference.named_parameters())
    for name, p in drawn.named_parameters():
        if name != "transformer.wte.weight":
            assert torch.equal(p, expected[name]), name
    wte = drawn.transformer.wte.weight
    unused = torch.ones(len(wte), dtype=torch.bool)
    unused[tokens] = False
    assert 20 < len(tokens) < 1000 and not wte[unused].any() and bool(wte[tokens].ne(0).all())
    std = student.model.config.initializer_range
    assert float(wte[tokens].std()) == pytest.approx(std, rel=0.05) and abs(float(wte[tokens].mean())) < std / 10
    fewer = random_like(student, 77, tokens[::3]).model.transformer.wte.weight
    assert torch.equal(fewer[tokens[::3]], wte[tokens[::3]]) and not fewer[tokens[1::3]].any()
    assert not torch.equal(random_like(student, 78, tokens).model.transformer.wte.weight[tokens], wte[tokens])


def test_a_tasks_null_draws_do_not_depend_on_the_other_tasks_of_the_run(gpt2_tokenizer, task) -> None:
    student = gpt2(gpt2_tokenizer, 2, seed=5)
    enc = encode_task(task, gpt2_tokenizer)
    other = encode_task(get_task("numerals", n_prompts=8), gpt2_tokenizer)
    assert set(task_tokens([other])) - set(task_tokens([enc]))  # the other task reads rows this one does not
    alone = null_draws(student, [enc], Ablation.MEAN, seed=0, n_null=2, n_check=0)[0]
    shared = null_draws(student, [enc, other], Ablation.MEAN, seed=0, n_null=2, n_check=0)[0]
    for a, b in zip(alone, shared):
        np.testing.assert_array_equal(a.effects, b.effects)
