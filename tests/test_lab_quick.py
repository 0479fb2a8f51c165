"""End to end: the quick pair recipe builds four loadable model folders, an index and cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from circuitdiff.errors import CircuitDiffError
from circuitdiff.lab.cli import app
from circuitdiff.lab.pairs import build_pairs
from circuitdiff.models.loading import load_model
from circuitdiff.tasks import encode_task, get_task


@pytest.mark.slow
def test_quick_build_pairs_end_to_end(tmp_path: Path) -> None:
    summary = build_pairs(tmp_path, quick=True, progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index == summary["index"]
    assert set(index) == {"tiny-gpt2", "tiny-bert"}
    for entry in index.values():
        for role in ("teacher", "student"):
            folder = tmp_path / entry[role]
            assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
            assert not (folder / "checkpoint").exists()
            loaded = load_model(str(folder))  # the toolkit's own loader accepts the folder
            assert next(loaded.model.parameters()).dtype == torch.float32
            masked = entry["kind"] == "masked"
            enc = encode_task(get_task("ioi", 8, 0, masked), loaded.tokenizer)
            assert enc.n == 8
    student = json.loads((tmp_path / "tiny-distilbert" / "lab_report.json").read_text())
    assert student["architecture"]["model_type"] == "distilbert" and student["recipe"]["layers"] == [0]


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["distil", str(tmp_path / "missing"), str(tmp_path / "out"), "--layers", "0,x"])
    assert isinstance(result.exception, CircuitDiffError) and "comma-separated" in str(result.exception)
    result = runner.invoke(app, ["distil", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert isinstance(result.exception, CircuitDiffError) and "not found" in str(result.exception)
    result = runner.invoke(app, ["train-teacher", str(tmp_path / "t"), "--kind", "seq2seq"])
    assert isinstance(result.exception, CircuitDiffError)
    result = runner.invoke(app, ["train-teacher", str(tmp_path / "t"), "--tasks", "ioi,nope"])
    assert isinstance(result.exception, CircuitDiffError) and "nope" in str(result.exception)


def test_cli_distils_a_builtin_teacher_by_name(tmp_path: Path) -> None:
    """`lab distil tiny-gpt2 OUT`: a shipped model as teacher, teacher and student accuracy printed."""
    result = CliRunner().invoke(app, ["distil", "tiny-gpt2", str(tmp_path / "s"), "--layers", "0,5", "--steps", "2",
                                      "--batch-size", "4", "--tasks", "numerals:16", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "(teacher 100.0%" in result.output and "cost per 1,000 training tokens" in result.output
    report = json.loads((tmp_path / "s" / "lab_report.json").read_text())
    assert report["teacher"] == "tiny-gpt2" and report["lab_tokenizer"] and report["recipe"]["layers"] == [0, 5]


def test_cli_circuit_min_share_chooses_which_components_the_loss_holds(tmp_path: Path) -> None:
    """Every pair chosen carries at least the share asked for; a share outside [0, 1) is a named error."""
    held: dict[str, set[str]] = {}
    for share in ("0.15", "0.01"):
        result = CliRunner().invoke(app, ["distil", "tiny-gpt2", str(tmp_path / share), "--steps", "1",
                                          "--batch-size", "4", "--tasks", "ioi:16", "--no-progress",
                                          "--alpha-circuit", "1", "--circuit-tasks", "ioi", "--circuit-min-share", share])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / share / "lab_report.json").read_text())["recipe"]["circuit_min_share"] == float(share)
        pairs = json.loads((tmp_path / share / "circuit_targets.json").read_text())[0]["pairs"]
        assert pairs and all(p["share"] >= float(share) for p in pairs)
        held[share] = {p["student"] for p in pairs}
    assert held["0.15"] < held["0.01"]  # a lower share holds strictly more components
    bad = CliRunner().invoke(app, ["distil", "tiny-gpt2", str(tmp_path / "b"), "--alpha-circuit", "1",
                                   "--circuit-min-share", "1.5"])
    assert isinstance(bad.exception, CircuitDiffError) and "circuit_min_share" in str(bad.exception)
