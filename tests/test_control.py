"""``--control MODEL``: the teacher against an unrelated model, beside the pair, end to end on the shipped pairs.

The reference is a direct comparison of the teacher with the control model (the route the
study's control row takes): the control record must hold exactly its alignment, interval,
chance level and paper A, so the control is scored the way any pair is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import circuitdiff
from circuitdiff.options import CompareOptions, OptionsError
from test_cli_usage import assert_usage_error, run

FAST = dict(n_prompts=12, n_boot=20, n_null=2, circuits=False, progress=False)


@pytest.fixture(scope="module")
def with_control(tmp_path_factory, one_torch_thread) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("control")
    proc = run("compare", "--teacher", "tiny-gpt2", "--student", "tiny-distilgpt2", "--control", "tiny-distilbert",
               "-t", "numerals", "--n-prompts", "12", "--n-boot", "20", "--n-null", "2", "--no-circuits",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "control (teacher vs tiny-distilbert)" in proc.stdout
    return json.loads((out / "results.json").read_text()), out


def test_control_record_is_the_direct_comparison(with_control) -> None:
    results, _ = with_control
    assert results["control"]["name"] == "tiny-distilbert" and results["control"]["masked_lm"] is True
    assert results["options"]["control"] == "tiny-distilbert"
    control = results["tasks"]["numerals"]["control"]
    direct = circuitdiff.compare("tiny-gpt2", "tiny-distilbert", "numerals", **FAST)["tasks"]["numerals"]
    for key in ("score", "ci", "null", "null_values", "paper", "above_chance"):
        assert control["alignment"][key] == pytest.approx(direct["alignment"][key]), key
    assert control["clean_metric"] == pytest.approx(direct["student"]["clean_metric"])
    assert control["alignment"]["paper"] is not None  # cross-family: the study's A across tokenisations
    lo, hi = control["alignment"]["ci"]
    assert lo <= control["alignment"]["score"] <= hi
    # the pair itself is untouched by the control
    pair = circuitdiff.compare("tiny-gpt2", "tiny-distilgpt2", "numerals", **FAST)["tasks"]["numerals"]
    assert results["tasks"]["numerals"]["alignment"]["score"] == pytest.approx(pair["alignment"]["score"])


def test_control_in_the_report(with_control) -> None:
    _, out = with_control
    html = (out / "report.html").read_text()
    assert "control: paper A, teacher vs tiny-distilbert" in html


def test_bad_control_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run("compare", "--control", str(tmp_path / "missing"), "-t", "numerals", "--n-prompts", "8",
               "--out", str(tmp_path / "out"))
    assert_usage_error(proc, "control model", "missing")


def test_control_option_is_checked() -> None:
    with pytest.raises(OptionsError, match="control"):
        CompareOptions(control="  ")
    assert CompareOptions(control=Path("a/b")).control == "a/b"


def test_teacher_rerun_equals_reuse(one_torch_thread) -> None:
    """When the control pair's prompts differ from the pair's (e.g. ``facts`` drops items per tokenizer) the
    teacher is run again; on the same prompts that run must give what reusing the pair's teacher run gives."""
    from circuitdiff.compare import prepare_tasks, same_tokenisation
    from circuitdiff.control import run_control_task
    from circuitdiff.models.loading import load_model
    from circuitdiff.pipeline import run_model_on_task

    options = CompareOptions(n_prompts=8, n_boot=20, null_model=False, circuits=False)
    teacher, control = load_model("tiny-gpt2"), load_model("tiny-distilbert")
    (item,) = prepare_tasks(teacher, control, ["numerals"], options)
    task, enc = item.teacher
    teacher_run = run_model_on_task(teacher, task, options.ablation, encoded=enc, n_boot=options.n_boot)
    same = same_tokenisation(item.teacher[1], item.student[1])
    assert not same
    reused = run_control_task(teacher, control, item, options, same_tokens=same, teacher_run=teacher_run)
    rerun = run_control_task(teacher, control, item, options, same_tokens=same)
    assert reused.entry["alignment"]["score"] == pytest.approx(rerun.entry["alignment"]["score"])
    assert reused.entry["alignment"]["paper"] == pytest.approx(rerun.entry["alignment"]["paper"])
    assert reused.entry["model"] == "tiny-distilbert" and reused.entry["n_prompts"] == 8
