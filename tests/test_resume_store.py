"""Task checkpoints of ``compare``: reused only when complete and from the same configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitdiff.compare import CompareOptions, compare
from circuitdiff.results import RESULTS_JSON
from test_resume_kill import write_word_task
from tiny_models import save_tiny

OPTIONS = CompareOptions(n_boot=10, circuits=False, null_model=True, seed=1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    save_tiny("gpt2", root / "teacher", seed=0)
    save_tiny("gpt2", root / "student", seed=1, n_layers=1)
    save_tiny("gpt2", root / "student2", seed=2, n_layers=1)
    for name in ("one", "two"):
        write_word_task(root / f"{name}.jsonl", seed=len(name) + ord(name[0]), n=8)
    return root


def run(ws: Path, out: Path, options: CompareOptions = OPTIONS, student: str = "student",
        tasks: tuple[str, ...] = ("one", "two"), messages: list[str] | None = None) -> dict:
    def progress(description: str, total: float):
        if messages is not None:
            messages.append(description)
        return lambda amount: None

    return compare(str(ws / "teacher"), str(ws / student), [str(ws / f"{t}.jsonl") for t in tasks], options, out,
                   progress=progress)


def reused(messages: list[str]) -> list[str]:
    return [m.split(":")[0] for m in messages if "reused" in m]


def test_finished_tasks_are_reused_and_results_unchanged(ws: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    run(ws, full)
    part = tmp_path / "part"
    run(ws, part, tasks=("one",))
    messages: list[str] = []
    run(ws, part, messages=messages)
    assert reused(messages) == ["one.jsonl"]
    assert (full / RESULTS_JSON).read_bytes() == (part / RESULTS_JSON).read_bytes()


def test_memory_budget_does_not_invalidate(ws: Path, tmp_path: Path) -> None:
    run(ws, tmp_path)
    messages: list[str] = []
    run(ws, tmp_path, CompareOptions(n_boot=10, circuits=False, null_model=True, seed=1, memory_budget=1 << 26),
        messages=messages)
    assert reused(messages) == ["one.jsonl", "two.jsonl"]


@pytest.mark.parametrize("change", ["seed", "student", "prompts"])
def test_other_configuration_is_recomputed(ws: Path, tmp_path: Path, change: str) -> None:
    run(ws, tmp_path, tasks=("one",))
    messages: list[str] = []
    if change == "seed":
        run(ws, tmp_path, CompareOptions(n_boot=10, circuits=False, null_model=True, seed=2), tasks=("one",),
            messages=messages)
    elif change == "student":
        run(ws, tmp_path, student="student2", tasks=("one",), messages=messages)
    else:
        task = ws / "one.jsonl"
        original = task.read_text()
        try:
            task.write_text(original.replace('"prompt": "', '"prompt": "w5 ', 1))  # one prompt one word longer
            run(ws, tmp_path, tasks=("one",), messages=messages)
        finally:
            task.write_text(original)
    assert reused(messages) == []


@pytest.mark.parametrize("damage", ["truncated-json", "missing-table", "wrong-task"])
def test_damaged_checkpoints_are_recomputed(ws: Path, tmp_path: Path, damage: str) -> None:
    run(ws, tmp_path, tasks=("one",))
    meta = next((tmp_path / "tasks").glob("*.json"))
    if damage == "truncated-json":
        meta.write_text(meta.read_text()[:100])
    elif damage == "missing-table":
        next((tmp_path / "tasks").glob("*.per_prompt.parquet")).unlink()
    else:
        data = json.loads(meta.read_text())
        data["task"] = "two.jsonl"
        meta.write_text(json.dumps(data))
    messages: list[str] = []
    run(ws, tmp_path, tasks=("one",), messages=messages)
    assert reused(messages) == []
    assert json.loads((tmp_path / RESULTS_JSON).read_text())["tasks"]


def test_resume_off_recomputes(ws: Path, tmp_path: Path) -> None:
    run(ws, tmp_path, tasks=("one",))
    messages: list[str] = []
    compare(str(ws / "teacher"), str(ws / "student"), [str(ws / "one.jsonl")], OPTIONS, tmp_path, resume=False,
            progress=lambda d, t: (messages.append(d), lambda a: None)[1])
    assert reused(messages) == []


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
