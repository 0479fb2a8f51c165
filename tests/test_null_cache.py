"""The random students kept on disk: a later run on the same architecture reads them instead of drawing.

Ground truth: the draws a run reads from the cache equal, to the last bit, the draws a run
without the cache computes for another student of the same architecture; anything that
decides the draws (architecture, seed, number of draws, prompts, library versions) misses.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import circuitdiff
import circuitdiff.compare as compare_module
from circuitdiff import null
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.null_cache import NullCache, cache_key
from circuitdiff.options import CompareOptions
from circuitdiff.tasks import encode_task, get_task

SMALL = dict(n_prompts=8, n_boot=20, circuits=False, n_null=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def other_student(student: LoadedModel) -> LoadedModel:
    """The same architecture with other weights: its random students are the same ones."""
    model = copy.deepcopy(student.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return LoadedModel("other student", model, student.tokenizer, type(student.adapter)(model))


@pytest.fixture
def draws_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many random students ``compare`` drew, run by run."""
    made: list[int] = []
    real = compare_module.null_draws

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        made.append(kwargs["n_null"])
        return out

    monkeypatch.setattr(compare_module, "null_draws", spy)
    return made


def null_values(results: dict) -> list[float]:
    return results["tasks"]["ioi"]["alignment"]["null_values"]


def test_a_later_run_reads_the_draws_a_fresh_run_would_compute(tmp_path: Path, draws_made: list[int]) -> None:
    teacher, student = load_model("tiny-gpt2"), load_model("tiny-distilgpt2")
    cache = tmp_path / "null"
    first = circuitdiff.compare(teacher, student, ["ioi"], progress=False, null_cache=cache, **SMALL)
    assert draws_made == [3] and len(list(cache.glob("*.npz"))) == 1
    second_student = other_student(student)
    cached = circuitdiff.compare(teacher, second_student, ["ioi"], progress=False, null_cache=cache, **SMALL)
    assert draws_made == [3], "the second student's random students were drawn again"
    fresh = circuitdiff.compare(teacher, second_student, ["ioi"], progress=False, **SMALL)
    assert draws_made == [3, 3]
    assert null_values(cached) == null_values(fresh) and len(null_values(cached)) == 3
    assert cached["tasks"]["ioi"]["alignment"] == fresh["tasks"]["ioi"]["alignment"]
    assert null_values(first) == null_values(fresh)  # the draws never depended on the student's weights


def test_anything_that_decides_the_draws_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = load_model("tiny-gpt2"), load_model("tiny-distilgpt2")
    enc8, enc10 = (encode_task(get_task("ioi", n, 0), student.tokenizer) for n in (8, 10))
    options = CompareOptions(**SMALL)
    key = cache_key(student, enc8, options)
    assert cache_key(other_student(student), enc8, options) == key  # weights never decide the draws
    assert cache_key(student, enc8, replace(options, n_boot=99, circuits=True)) == key  # nor do these options
    assert cache_key(teacher, enc8, options) != key  # 6 layers, not 3
    assert cache_key(student, enc10, options) != key
    for change in (dict(seed=1), dict(n_null=4), dict(ablation="zero"), dict(first_token=True)):
        assert cache_key(student, enc8, replace(options, **change)) != key, change
    monkeypatch.setattr(null, "DRAWS_VERSION", null.DRAWS_VERSION + 1)
    assert cache_key(student, enc8, options) != key  # circuitdiff changed how it draws
    monkeypatch.undo()
    assert cache_key(student, enc8, options) == key
    monkeypatch.setattr(circuitdiff, "__version__", "0.0.0-other")
    assert cache_key(student, enc8, options) != key


def test_an_unreadable_file_is_drawn_again_and_rewritten(tmp_path: Path, draws_made: list[int]) -> None:
    teacher, student = load_model("tiny-gpt2"), load_model("tiny-distilgpt2")
    cache = tmp_path / "null"
    first = circuitdiff.compare(teacher, student, ["ioi"], progress=False, null_cache=cache, **SMALL)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"not a zip file")
    again = circuitdiff.compare(teacher, student, ["ioi"], progress=False, null_cache=cache, **SMALL)
    assert draws_made == [3, 3] and null_values(again) == null_values(first)
    enc = encode_task(get_task("ioi", 8, 0), student.tokenizer)
    draws = NullCache(cache).load(student, enc, CompareOptions(**SMALL))
    assert draws is not None and [d.seed for d in draws] == sorted({d.seed for d in draws})
    assert all(np.isfinite(d.effects).all() for d in draws)


def test_cli_null_cache_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", "compare", "--null-cache", str(not_a_folder),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "null cache" in lines[0] and str(not_a_folder) in lines[0], proc.stderr
