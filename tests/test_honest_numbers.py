"""Numbers relative to clean only where the clean metric is clearly positive; patching relative to the
gap; effect intervals; findings only for solved tasks. Shipped pair and hand-built models."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from circuitdiff.analysis.concentration import concentration_summary
from circuitdiff.analysis.influence import solved_problem
from circuitdiff.analysis.pair import paper_score, task_finding
from circuitdiff.cli.display import print_summary
from circuitdiff.compare import CompareOptions, compare
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.models.adapters import adapter_for
from circuitdiff.models.loading import LoadedModel
from circuitdiff.pipeline import run_model_on_task
from circuitdiff.report.render import write_report
from circuitdiff.tasks import Task, TaskPrompt, get_task
from tiny_models import tiny_model, word_tokenizer

SWAPPED = "swapped.jsonl"
DROPS = ("worst_drop", "mean_drop", "median_drop", "worst5_mean_drop", "severity_tail")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The shipped pair on numerals and on numerals with answer and distractor swapped."""
    root = tmp_path_factory.mktemp("honest")
    task = get_task("numerals", n_prompts=16, seed=0)
    lines = [json.dumps({"prompt": p.prompt, "answer": p.distractor, "distractor": p.answer,
                         "corrupted_prompt": p.corrupted_prompt, "template": p.template, "source": "swap"})
             for p in task.prompts]
    (root / SWAPPED).write_text("\n".join(lines) + "\n")
    torch.set_num_threads(1)
    options = CompareOptions(n_prompts=16, n_boot=200, circuit_thresholds=(0.2,), null_model=False)
    results = compare("tiny-gpt2", "tiny-distilgpt2", ["numerals", str(root / SWAPPED)], options, root / "out",
                      resume=False)
    return results, root / "out"


def test_swapped_answers_withhold_everything_relative_to_clean(shipped) -> None:
    results, out = shipped
    task = results["tasks"][SWAPPED]
    for role in ("teacher", "student"):
        assert task[role]["clean_metric"] < -1
        assert all(c["percent_of_clean"] is None for c in task[role]["components"])
        for summary in (task["concentration"][role], task["concentration_heads"][role]):
            assert all(summary[k] is None for k in DROPS)
            assert summary["effective_number"] is not None  # shares do not depend on the sign
    assert task["circuit"]["thresholds"] == []
    assert task["alignment"]["paper"] is None
    assert task["finding"]["claimed"] is False
    stored = json.loads((out / "results.json").read_text())["warnings"]
    for name in ("tiny-gpt2", "tiny-distilgpt2"):
        assert any(w.startswith(f"{SWAPPED}: model '{name}': clean logit difference -") and "negative" in w
                   and "paper A" in w for w in stored)
    assert any(w.startswith(f"{SWAPPED}: paper A is withheld") for w in stored)
    assert any("ignoring unknown keys ['source']" in w for w in stored)  # a load-time warning is kept too


def test_the_unswapped_task_keeps_its_numbers(shipped) -> None:
    """The same pair and prompts with the right answer: everything is there (so the test above can fail)."""
    task = shipped[0]["tasks"]["numerals"]
    assert all(c["percent_of_clean"] is not None for c in task["teacher"]["components"])
    assert task["concentration"]["teacher"]["worst_drop"] is not None
    assert task["circuit"]["thresholds"] and task["alignment"]["paper"] is not None
    assert task["finding"] == {"claimed": True, "reason": None}


def test_headlines_withheld_for_the_unsolved_task_in_report_and_summary(shipped) -> None:
    results, out = shipped
    html = write_report(results, out).read_text()
    assert "No concentration finding: teacher &#39;tiny-gpt2&#39; does not solve the task" in html
    assert "No alignment finding" in html
    assert html.count("No concentration finding") == 1  # numerals, solved by both, keeps its headline
    assert "effect (95% CI)" in html
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=400), results, out)
    text = buffer.getvalue()
    assert "finding: No concentration finding" in text
    assert f"note: {SWAPPED}: model 'tiny-gpt2': clean logit difference" in text


def test_heads_only_statistics_are_the_head_rows(shipped) -> None:
    """Heads-only robustness = the statistics computed over head rows alone, by numpy here."""
    results, out = shipped
    task = results["tasks"]["numerals"]
    per_prompt = pd.read_parquet(out / "effects_per_prompt.parquet")
    for role in ("teacher", "student"):
        heads = [c for c in task[role]["components"] if c["kind"] == "head"]
        effects = np.array([c["effect"] for c in heads])
        drops = -100 * effects / task[role]["clean_metric"]
        stats = task["concentration_heads"][role]
        assert stats["worst_drop"]["point"] == pytest.approx(drops.max(), rel=1e-9)
        assert stats["mean_drop"]["point"] == pytest.approx(drops.mean(), rel=1e-9)
        assert stats["median_drop"]["point"] == pytest.approx(np.median(drops), rel=1e-9)
        share = np.abs(effects) / np.abs(effects).sum()
        assert stats["top_1_share"]["point"] == pytest.approx(share.max(), rel=1e-9)
        part = per_prompt[(per_prompt.task == "numerals") & (per_prompt.model == role)]
        assert set(part.component) > {c["name"] for c in heads}  # pooled has MLPs too
        pooled = task["concentration"][role]["top_1_share"]["point"]
        assert pooled != pytest.approx(stats["top_1_share"]["point"])


def test_effect_intervals_contain_the_effect_and_match_the_normal_width(shipped) -> None:
    results, out = shipped
    table = pd.read_parquet(out / "components.parquet")
    assert {"effect_lo", "effect_hi"} <= set(table.columns)
    assert ((table.effect_lo <= table.effect + 1e-12) & (table.effect <= table.effect_hi + 1e-12)).all()
    per_prompt = pd.read_parquet(out / "effects_per_prompt.parquet")
    part = per_prompt[(per_prompt.task == "numerals") & (per_prompt.model == "teacher")]
    wide = part.pivot(index="component", columns="prompt", values="effect")
    rows = table[(table.task == "numerals") & (table.model == "teacher")].set_index("name")
    sd = wide.std(axis=1, ddof=0) / np.sqrt(wide.shape[1])
    big = sd[sd > 1e-3].index
    width = (rows.loc[big, "effect_hi"] - rows.loc[big, "effect_lo"]) / (2 * 1.96 * sd[big])
    assert width.between(0.65, 1.35).all(), width  # a percentile interval of a mean is about +-1.96 SE


def test_solved_means_clearly_above_chance_and_positive() -> None:
    rng = np.random.default_rng(0)
    chance = rng.normal(-0.007, 1.0, 64)  # the student at chance
    assert "not clearly above chance" in solved_problem(chance)
    assert "below" in solved_problem(np.full(64, 0.05))  # always right, but by a hair
    assert solved_problem(np.abs(rng.normal(3, 1, 64))) is None
    run = lambda name, clean: SimpleNamespace(clean=clean, info=SimpleNamespace(name=name), multi_token=False)  # noqa: E731
    finding = task_finding(run("t", np.full(64, 2.0)), run("s", chance))
    assert finding["claimed"] is False and finding["reason"].startswith("student 's' does not solve the task")


# --- patching on a model whose answer is known ---------------------------------------------

STAR = (1, 2)
"""The only component that writes anything: layer 1, head 2."""


def one_head_model() -> torch.nn.Module:
    """GPT-2 whose every head and MLP writes nothing except head L1.H2.

    The residual at the read position is then embedding + constant biases + L1.H2's output,
    so with the read token shared by clean and corrupted prompts, patching L1.H2 alone moves
    the logits exactly from one run to the other: 100% of the gap, every other component 0%.
    """
    model = tiny_model("gpt2", seed=7)
    model.requires_grad_(False)
    d_head = model.config.n_embd // model.config.n_head
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
        for layer, block in enumerate(model.transformer.h):
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            keep = block.attn.c_proj.weight[STAR[1] * d_head:(STAR[1] + 1) * d_head].clone()
            block.attn.c_proj.weight.zero_()
            if layer == STAR[0]:
                block.attn.c_proj.weight[STAR[1] * d_head:(STAR[1] + 1) * d_head] = keep
    return model


def gap_task(model, tokenizer, n: int = 12) -> Task:
    """Clean and corrupted prompts ending in the same word; the answer is the word whose logit the clean
    prompt raises most over the corrupted one, the distractor the one it lowers most (plain HF forward)."""
    rng = random.Random(1)
    prompts = []
    for _ in range(n):
        last = f"w{rng.randrange(4, 60)}"
        clean = " ".join(f"w{rng.randrange(4, 60)}" for _ in range(5)) + " " + last
        corrupted = " ".join(f"w{rng.randrange(4, 60)}" for _ in range(5)) + " " + last
        with torch.no_grad():
            logits = [model(torch.tensor([[tokenizer.convert_tokens_to_ids(w) for w in text.split()]])).logits[0, -1]
                      for text in (clean, corrupted)]
        delta = (logits[0] - logits[1])[4:]
        answer, distractor = int(delta.argmax()) + 4, int(delta.argmin()) + 4
        prompts.append(TaskPrompt(clean, " " + tokenizer.convert_ids_to_tokens(answer),
                                  " " + tokenizer.convert_ids_to_tokens(distractor), corrupted, "one"))
    return Task("gap", tuple(prompts))


@pytest.mark.parametrize("ablation", [Ablation.DENOISING, Ablation.NOISING], ids=lambda a: a.value)
def test_patching_statistics_on_a_model_with_a_known_answer(ablation: Ablation, one_torch_thread) -> None:
    model, tokenizer = one_head_model(), word_tokenizer()
    lm = LoadedModel("one-head", model, tokenizer, adapter_for(model))
    run = run_model_on_task(lm, gap_task(model, tokenizer), ablation, n_boot=200)
    gap = run.clean - run.corrupted
    assert (gap > 0).all()
    for e in run.effects:
        assert e.percent_of_clean is None  # no meaning when patching
        expected = 100.0 if (e.layer, e.head) == STAR else 0.0
        assert e.percent_of_gap == pytest.approx(expected, abs=1e-3), e.name
        assert e.effect_lo <= e.effect <= e.effect_hi
    star = next(e for e in run.effects if (e.layer, e.head) == STAR)
    sign = 1.0 if ablation is Ablation.DENOISING else -1.0  # denoising restores, noising removes
    assert star.effect == pytest.approx(sign * gap.mean(), rel=1e-4)
    from circuitdiff.analysis.pair import robustness

    stats = robustness(run, n_boot=200)
    assert stats["worst_drop"].point == pytest.approx(100.0, abs=1e-3)
    assert stats["mean_drop"].point == pytest.approx(100.0 / len(run.effects), abs=1e-3)
    assert stats["top_1_share"].point == pytest.approx(1.0, abs=1e-5)
    assert stats["effective_number"].point == pytest.approx(1.0, abs=1e-3)
    heads = robustness(run, heads_only=True, n_boot=200)
    n_heads = sum(e.head is not None for e in run.effects)
    assert heads["mean_drop"].point == pytest.approx(100.0 / n_heads, abs=1e-3)
    if ablation is Ablation.DENOISING:  # the reference study's influence would rank L1.H2 last
        paper, why = paper_score(run, run, same_tokens=True)
        assert paper is None and "denoising" in why


def test_concentration_refuses_a_negative_clean_metric() -> None:
    effects = np.array([[-1.0, -1.2, -0.8], [0.1, 0.0, 0.2]])
    negative = concentration_summary(effects, np.array([-3.0, -2.5, -3.5]), n_boot=50)
    positive = concentration_summary(effects, np.array([3.0, 2.5, 3.5]), n_boot=50)
    assert negative["worst_drop"] is None and positive["worst_drop"].point == pytest.approx(100.0 / 3.0)


def test_no_effect_at_all_gives_null_statistics_not_a_crash() -> None:
    from circuitdiff.analysis.pair import robustness
    from circuitdiff.models.components import Component

    comps = [Component(0, 0), Component(0, 1), Component(0, None)]
    effects = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.5]])  # only the MLP matters
    run = SimpleNamespace(per_prompt_effects=effects, clean=np.array([3.0, 2.0, 4.0]), corrupted=None,
                          ablation="mean", components=comps)
    heads = robustness(run, heads_only=True, n_boot=20)
    assert heads and all(v is None for v in heads.values())
    pooled = robustness(run, n_boot=20)
    assert pooled["top_1_share"].point == pytest.approx(1.0) and pooled["worst_drop"].point == pytest.approx(50.0)
