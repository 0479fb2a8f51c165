"""The command line end to end, and its answers to bad input: one line, non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers as T

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, gpt2_tokenizer) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    for name, layers in (("teacher", 2), ("student", 1)):
        torch.manual_seed(layers)
        cfg = T.GPT2Config(n_layer=layers, n_head=2, n_embd=16, vocab_size=len(gpt2_tokenizer), n_positions=128)
        T.GPT2LMHeadModel(cfg).save_pretrained(root / name)
        gpt2_tokenizer.save_pretrained(root / name)
    return root / "teacher", root / "student"


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_compare_end_to_end_on_builtin_and_custom_task(pair, tmp_path) -> None:
    teacher, student = pair
    task_file = tmp_path / "mine.jsonl"
    rows = [{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "distractor": " John"},
            {"prompt": "Then Anna and Tom had a long talk, and Tom handed a book to", "answer": " Anna", "distractor": " Tom"},
            {"prompt": "After Sarah and Mike left the park, Mike gave a ring to", "answer": " Sarah", "distractor": " Mike"},
            {"prompt": "While Kate and Paul were at the office, Paul sent a letter to", "answer": " Kate", "distractor": " Paul"}]
    task_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    proc = cli("compare", "--teacher", str(teacher), "--student", str(student), "--task", "ioi", "--task", str(task_file),
               "--n-prompts", "8", "--n-boot", "20", "--n-null", "3", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "alignment" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["options"]["n_null"] == 3 and len(results["tasks"]["ioi"]["alignment"]["null_values"]) == 3
    assert set(results["tasks"]) == {"ioi", "mine.jsonl"}
    assert results["teacher"]["n_layers"] == 2 and results["student"]["n_layers"] == 1
    assert results["tasks"]["mine.jsonl"]["n_prompts"] == 4
    table = pd.read_parquet(out / "components.parquet")
    # one row per model, task and component: (2 layers x (2 heads + MLP) + 1 x 3) x 2 tasks
    assert len(table) == (2 * 3 + 1 * 3) * 2
    assert set(table.columns) >= {"model", "task", "name", "kind", "layer", "head", "effect", "share"}
    for (_, _), group in table.groupby(["model", "task"]):
        assert group["share"].sum() == pytest.approx(1.0)


def test_tasks_command_lists_builtins() -> None:
    proc = cli("tasks")
    assert proc.returncode == 0
    for name in ("ioi", "numerals", "greater-than", "successor", "induction"):
        assert name in proc.stdout


def test_missing_model_is_one_line(tmp_path) -> None:
    proc = cli("compare", "--teacher", str(tmp_path / "nope"), "--student", str(tmp_path / "nope2"), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "not found", "nope")


def test_malformed_jsonl_names_the_line(pair, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a b", "answer": " c", "distractor": " d"}\n\n{"prompt": "x", "answer": \n')
    proc = cli("compare", "--teacher", str(pair[0]), "--student", str(pair[1]), "--task", str(bad), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "line 3")
    assert not (tmp_path / "o" / "results.json").exists()


def test_multi_token_answers_run_edge_scoring(pair, tmp_path) -> None:
    """EAP edges on a task whose answers are several tokens for GPT-2's tokenizer (and of different lengths)."""
    items = [("The capital of France is", " Parisianistically", " Rome"), ("The capital of Italy is", " Rome", " Paris"),
             ("The capital of Spain is", " Madridistically", " Berlin"), ("The capital of Peru is", " Lima", " Oslo")]
    task = tmp_path / "multi.jsonl"
    task.write_text("".join(json.dumps({"prompt": p, "answer": a, "distractor": d}) + "\n" for p, a, d in items))
    out = tmp_path / "o"
    proc = cli("compare", "--teacher", str(pair[0]), "--student", str(pair[1]), "--task", str(task), "--edges", "eap",
               "--n-boot", "20", "--no-null", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    edges = pd.read_parquet(out / "edges.parquet")  # every edge of each model: 2 layers x 2 heads, and 1 layer
    assert edges.groupby("model").size().to_dict() == {"teacher": 31, "student": 5}
    assert set(edges["method"]) == {"eap"} and edges["effect"].notna().all()


def test_pickle_checkpoint_refused_without_flag(tmp_path, gpt2_tokenizer) -> None:
    folder = tmp_path / "pickled"
    T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(gpt2_tokenizer))).save_pretrained(
        folder, safe_serialization=False
    )
    gpt2_tokenizer.save_pretrained(folder)
    if not any(folder.glob("*.bin")):
        torch.save({}, folder / "pytorch_model.bin")  # transformers 5 may always write safetensors
        for f in folder.glob("*.safetensors"):
            f.unlink()
    proc = cli("compare", "--teacher", str(folder), "--student", str(folder), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "pickle", "--allow-pickle")


def test_circuit_thresholds_option(tmp_path) -> None:
    out = tmp_path / "o"
    proc = cli("compare", "-t", "numerals", "--n-prompts", "8", "--n-boot", "20", "--no-null", "--no-report",
               "--circuit-thresholds", "0.25", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    circuit = json.loads((out / "results.json").read_text())["tasks"]["numerals"]["circuit"]
    assert [t["threshold"] for t in circuit["thresholds"]] == [0.25] and circuit["teacher"]
    for bad in ("0.2,x", "0", "1.5", ","):
        proc = cli("compare", "--circuit-thresholds", bad, "--out", str(tmp_path / "bad"))
        assert_one_line_error(proc, "circuit thresholds")


def test_unknown_task_and_ablation(pair, tmp_path) -> None:
    proc = cli("compare", "--teacher", str(pair[0]), "--student", str(pair[1]), "--task", "no-such-task", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "no-such-task")
    proc = cli("compare", "--teacher", str(pair[0]), "--student", str(pair[1]), "--ablation", "explode", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "explode")
