"""Analyses 3 and 4 of the study: attention by token role, split-half CCA, sparsity, token-wise cosine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitdiff.analysis.attention_roles import attention_by_role
from circuitdiff.analysis.cca import pwcca, svcca
from circuitdiff.analysis.heldout import heldout_svcca_pwcca
from circuitdiff.analysis.sparsity import hoyer, near_zero_fraction
from circuitdiff.analysis.tokenwise import tokenwise_cosine
from tests.tiny_models import tiny_model


def _planted_gpt2(target: int) -> torch.nn.Module:
    """Tiny GPT-2 whose layer-0 head 0 attends to token ``target`` (weight edits, HF's own forward)."""
    model = tiny_model("gpt2", n_layers=1, n_heads=4, d_model=32).eval()
    model.set_attn_implementation("eager")
    d = 32
    with torch.no_grad():
        block = model.transformer.h[0]
        block.ln_1.weight.fill_(1.0)
        block.ln_1.bias.zero_()
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wpe.weight[:, 0] = 0.0
        model.transformer.wte.weight[target, 0] = 30.0
        w, b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: (d, 3d)
        w[:, :8] = 0.0
        b[:8] = 0.0
        b[0] = 40.0  # query of head 0: constant along head dim 0
        w[:, d:d + 8] = 0.0
        b[d:d + 8] = 0.0
        w[0, d] = 1.0  # key of head 0: the token's (normalised) dim 0
    return model


def test_attention_by_role_recovers_planted_head() -> None:
    target, n, s = 7, 12, 9
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 40, (n, s), generator=gen)
    where = torch.randint(0, s - 1, (n,), generator=gen)
    ids[torch.arange(n), where] = target
    model = _planted_gpt2(target)
    with torch.no_grad():
        att = model(ids, output_attentions=True).attentions[0]  # (n, heads, s, s) from plain HF
    other = (where + 1) % (s - 1)
    roles = {"planted": where.numpy(), "other": other.numpy(), "end": np.full(n, s - 1)}
    templates = np.arange(n) % 2
    for head, expect_planted in ((0, True), (1, False)):
        row = att[:, head, s - 1, :].double().numpy()
        res = {(r.template, r.role): r for r in attention_by_role(row, roles, templates, ("a", "b"), n_boot=200)}
        for t in ("a", "b"):
            planted = res[(t, "planted")]
            assert planted.lo <= planted.mean <= planted.hi
            assert planted.n_prompts == n // 2
            if expect_planted:
                assert planted.mean > 0.9 and res[(t, "other")].mean < 0.05
            else:
                assert planted.mean < 0.5


def test_role_absent_is_skipped() -> None:
    row = np.full((4, 3), 1 / 3)
    res = attention_by_role(row, {"x": np.array([-1, -1, 0, 1])}, np.zeros(4), ("t",), n_boot=50)
    assert len(res) == 1 and res[0].n_prompts == 2 and res[0].mean == pytest.approx(1 / 3)


def test_split_half_svcca_near_zero_on_independent_data() -> None:
    rng = np.random.default_rng(0)
    insample, heldout = [], []
    for seed in range(5):
        x, y = rng.normal(size=(64, 20)), rng.normal(size=(64, 20))
        insample.append(svcca(x, y))
        heldout.append(heldout_svcca_pwcca(x, y, seed=seed)[0])
    assert np.mean(insample) > 0.3  # in-sample CCA overfits independent data
    assert abs(np.mean(heldout)) < 0.1


def test_split_half_high_for_a_linear_map() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 9)) + 0.01 * rng.normal(size=(80, 9))
    sv, pw = heldout_svcca_pwcca(x, y, keep_variance=0.999)
    assert sv > 0.95 and pw > 0.95
    assert pwcca(x, y) > 0.95


def test_sparsity_against_numpy() -> None:
    onehot = np.array([0.0, 0.0, 5.0, 0.0])
    flat = np.array([-2.0, 2.0, 2.0, -2.0])
    assert hoyer(onehot) == pytest.approx(1.0)
    assert hoyer(flat) == pytest.approx(0.0)
    v = np.array([0.005, -0.5, 0.0, 3.0, -0.009])
    expect = (np.sqrt(5) - np.abs(v).sum() / np.sqrt((v**2).sum())) / (np.sqrt(5) - 1)
    assert hoyer(v) == pytest.approx(expect)
    assert near_zero_fraction(v) == pytest.approx(3 / 5)
    assert np.allclose(near_zero_fraction(np.stack([v, np.ones(5)])), [0.6, 0.0])
    assert np.isnan(hoyer(np.zeros(3)))


def test_tokenwise_cosine_self_is_one_and_masks() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 8))
    assert np.allclose(tokenwise_cosine(x, x), 1.0)
    assert np.allclose(tokenwise_cosine(x, -x), -1.0)
    y = x.copy()
    y[:, 4] = -x[:, 4]
    mask = np.ones((3, 5))
    mask[:, 4] = 0
    assert np.allclose(tokenwise_cosine(x, y, mask), 1.0)
    assert np.allclose(tokenwise_cosine(x, y), 3 / 5)
    with pytest.raises(ValueError):
        tokenwise_cosine(x, x[:, :4])


def test_matched_mlp_scores_have_intervals_around_the_point() -> None:
    from circuitdiff.analysis.mlp_compare import heldout_cca_with_interval, heldout_principal_cosine

    rng = np.random.default_rng(3)
    x, noise = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    sv, pw = heldout_cca_with_interval(x, noise, n_boot=100)
    for score in (sv, pw):
        assert score.lo <= score.value <= score.hi and abs(score.value) < 0.2
    sv, pw = heldout_cca_with_interval(x, x @ rng.normal(size=(8, 8)), n_boot=100)
    assert sv.value > 0.95 and sv.lo > 0.9 and pw.value > 0.95
    # Principal directions: a model against itself matches; independent isotropic noise does not.
    scaled = x * np.array([10.0, 6.0, 3.0, 1, 1, 1, 1, 1])
    assert heldout_principal_cosine(scaled, scaled) > 0.9
    assert heldout_principal_cosine(scaled, rng.normal(size=(60, 8))) < 0.6


@pytest.mark.parametrize("masked", [False, True])
def test_role_positions_point_at_the_role_words(masked: bool, gpt2_tokenizer, bert_tokenizer) -> None:
    from circuitdiff.tasks import encode_task, get_task
    from circuitdiff.tasks.roles import role_positions

    tok = bert_tokenizer if masked else gpt2_tokenizer
    for name in ("ioi", "numerals"):
        task = get_task(name, n_prompts=12, seed=1, masked=masked)
        enc = encode_task(task, tok)
        pos = role_positions(task, enc, tok)
        assert np.array_equal(pos["end"], enc.read_pos.numpy())
        named = [r for r in pos if r != "end"]
        shown = len(task.prompts[0].roles)
        assert named == (["S", "IO", "S2"] if name == "ioi" else [f"number {k}" for k in range(1, shown + 1)])
        for r, row in enumerate(enc.prompt_index.numpy()):
            words = {role: word for role, word, _ in task.prompts[int(row)].roles}
            for role in named:
                p = int(pos[role][r])
                assert p >= 0
                assert tok.decode([int(enc.input_ids[r, p])]).strip().lower() == words[role].lower()
        if name == "ioi":
            assert np.all(pos["S2"] > pos["S"]) and np.all(pos["S2"] < pos["end"])


def test_roles_fall_back_to_positions_from_the_end(gpt2_tokenizer) -> None:
    from circuitdiff.tasks import Task, TaskPrompt, encode_task
    from circuitdiff.tasks.roles import role_positions

    task = Task("plain", (TaskPrompt("a b c d e", " f", " g"), TaskPrompt("a b", " c", " d")))
    enc = encode_task(task, gpt2_tokenizer)
    pos = role_positions(task, enc, gpt2_tokenizer)
    assert list(pos) == ["end", "end-1", "end-2", "end-3", "end-4"]
    read = enc.read_pos.numpy()
    assert np.array_equal(pos["end-1"], read - 1) and np.all(pos["end-4"][read < 4] == -1)


def _gpt2_with_tokenizer(gpt2_tokenizer):  # noqa: ANN202
    from circuitdiff.models.loading import from_hugging_face

    model = tiny_model("gpt2", n_layers=2, n_heads=4, d_model=32)
    model.resize_token_embeddings(len(gpt2_tokenizer))
    return from_hugging_face(model, gpt2_tokenizer, "tiny")


def test_mlp_hidden_recording_equals_a_plain_hook_on_the_activation(gpt2_tokenizer) -> None:
    from circuitdiff.pipeline import batches, clean_pass
    from circuitdiff.tasks import encode_task, get_task

    lm = _gpt2_with_tokenizer(gpt2_tokenizer)
    enc = encode_task(get_task("ioi", n_prompts=8, seed=0), gpt2_tokenizer)
    clean, _ = batches(enc, torch.device("cpu"))
    got = clean_pass(lm, clean).mlp_hidden_read
    seen: list[torch.Tensor] = []
    handles = [blk.mlp.act.register_forward_hook(lambda _m, _i, out: seen.append(out))
               for blk in lm.model.transformer.h]
    with torch.no_grad():
        lm.model(enc.input_ids, attention_mask=enc.attention_mask)
    for h in handles:
        h.remove()
    rows = torch.arange(enc.n)
    expect = np.stack([a[rows, enc.read_pos].numpy() for a in seen])
    assert got is not None and got.shape == expect.shape
    np.testing.assert_allclose(got, expect, atol=1e-5)


def test_model_against_itself_tokenwise_one_and_heldout_high(gpt2_tokenizer) -> None:
    from circuitdiff.analysis.matching import Match
    from circuitdiff.analysis.representations import representation_records
    from circuitdiff.interventions.ablation import Ablation
    from circuitdiff.pipeline import run_model_on_task
    from circuitdiff.tasks import get_task

    lm = _gpt2_with_tokenizer(gpt2_tokenizer)
    run = run_model_on_task(lm, get_task("ioi", n_prompts=16, seed=0), Ablation.ZERO, n_boot=50)
    matching = [Match(c.name, c.name, 1.0) for c in run.components]
    rec = representation_records(run, run, matching, same_tokens=True, n_boot=50)
    assert [r.teacher for r in rec["mlp_representation"]] == ["L0.MLP", "L1.MLP"]
    for r in rec["mlp_representation"]:
        assert r.tokenwise_cosine is not None and r.tokenwise_cosine.point == pytest.approx(1.0)
        assert r.svcca.point > 0.95 and r.pwcca.point > 0.95
        # split-half directions: a model against itself reads its own split-half stability (< 1 at 8 prompts a half)
        assert r.principal_cosine is not None and 0.0 < r.principal_cosine <= 1.0
    sides = {(r.role_of_model, r.head) for r in rec["attention_roles"]}
    assert {h for _, h in sides if _ == "teacher"} == {h for _, h in sides if _ == "student"}
    assert {r.role for r in rec["attention_roles"]} == {"S", "IO", "S2", "end"}
    assert len(rec["mlp_sparsity"]) == 4 and all(0 <= r.near_zero.point <= 1 for r in rec["mlp_sparsity"])


def test_report_figures_draw_records_and_skip_empty() -> None:
    from circuitdiff.report import representation_figures as rf

    stat = {"point": 0.5, "lo": 0.4, "hi": 0.6, "level": 0.95, "n_valid": 8}
    att = [{"role_of_model": m, "head": "L0.H1", "share": 0.3, "counterpart": "L0.H1", "template": "t", "role": r,
            "mean": v, "lo": v, "hi": v, "n_prompts": 4} for m in ("teacher", "student") for r, v in (("S", 0.9), ("IO", 0.1))]
    fig = rf.attention_roles(att)
    assert fig is not None
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"0.90", "0.10"} <= texts
    rep = [{"teacher": "L0.MLP", "student": "L0.MLP", "svcca": stat, "pwcca": stat, "principal_cosine": 0.5,
            "tokenwise_cosine": None}]
    sp = [{"role_of_model": "teacher", "mlp": "L0.MLP", "near_zero": stat, "hoyer": stat, "threshold": 0.01}]
    assert rf.mlp_comparison(rep, sp) is not None
    assert rf.attention_roles([]) is None and rf.mlp_comparison([], []) is None


def test_missing_representation_parts_are_explained() -> None:
    """Each part of analyses 3 and 4 that cannot be computed is named in a note with its reason."""
    from types import SimpleNamespace

    from circuitdiff.analysis.matching import Match
    from circuitdiff.analysis.representations import representation_notes

    def run(n: int, width: int, attention: bool) -> SimpleNamespace:
        return SimpleNamespace(task="t", clean=np.ones(n), info=SimpleNamespace(d_model=width),
                               attention_read=np.zeros((1, n, 1, 3)) if attention else None)

    mlps = [Match(teacher="L0.MLP", student="L0.MLP", similarity=0.9)]
    codes = lambda notes: sorted(n.code for n in notes)  # noqa: E731
    assert codes(representation_notes(run(16, 8, True), run(16, 8, True), mlps, True)) == []
    assert codes(representation_notes(run(4, 8, True), run(4, 8, False), mlps, True)) == [
        "representation.few_prompts", "representation.no_attention"]
    assert codes(representation_notes(run(16, 8, True), run(16, 6, True), mlps, False)) == [
        "representation.no_principal_cosine", "representation.no_tokenwise"]
    assert representation_notes(run(4, 8, True), run(4, 8, True), [], True) == []  # no MLP pair: nothing missing
