"""Kill a real ``circuitdiff compare`` (SIGTERM) or ``circuitdiff sweep`` (SIGINT) process
midway, restart it, and get the same results.

The signal arrives once the first task (job) has finished. The process must exit 130
quickly, leaving complete checkpoints of the finished work and nothing else (no
results.json or merged table, no temporary files). The restarted run reuses that work
untouched, and its results equal an uninterrupted run's (results.json byte for byte).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from circuitdiff.results import COMPONENTS_TABLE, PER_PROMPT_TABLE, RESULTS_JSON, SIMILARITY_TABLE
from tiny_models import save_tiny

N_TASKS = 5
_CACHE: dict[str, Path] = {}


def write_word_task(path: Path, seed: int, n: int = 16) -> Path:
    """A JSONL task in the tiny tokenizer's made-up words (w4..w59)."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [f"w{rng.randrange(4, 60)}" for _ in range(rng.randrange(3, 7))]
        answer, distractor = rng.sample(range(4, 60), 2)
        lines.append(json.dumps({"prompt": " ".join(words), "answer": f" w{answer}", "distractor": f" w{distractor}"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny teacher and student with several word tasks; built once per session."""
    if "ws" not in _CACHE:
        root = tmp_path_factory.mktemp("resume-ws")
        save_tiny("gpt2", root / "teacher", seed=0)
        save_tiny("gpt2", root / "student", seed=1, n_layers=1)
        for i in range(N_TASKS):
            write_word_task(root / f"task{i}.jsonl", seed=i)
        _CACHE["ws"] = root
    return _CACHE["ws"]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def compare_cmd(ws: Path, out: Path) -> list[str]:
    tasks = [arg for i in range(N_TASKS) for arg in ("-t", str(ws / f"task{i}.jsonl"))]
    return [sys.executable, "-m", "circuitdiff.cli.main", "compare", "--teacher", str(ws / "teacher"),
            "--student", str(ws / "student"), *tasks, "--n-boot", "200", "--no-report", "--seed", "3", "--out", str(out)]


def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run (shared with the determinism test)."""
    if "ref" not in _CACHE:
        ws = workspace(tmp_path_factory)
        out = tmp_path_factory.mktemp("reference")
        done = subprocess.run(compare_cmd(ws, out), env=cli_env(PYTHONHASHSEED="1"), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        _CACHE["ref"] = out
    return _CACHE["ref"]


def assert_same_outputs(a: Path, b: Path) -> None:
    assert (a / RESULTS_JSON).read_bytes() == (b / RESULTS_JSON).read_bytes()
    for table in (COMPONENTS_TABLE, PER_PROMPT_TABLE, SIMILARITY_TABLE):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_sigterm_midway_then_resume_equals_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> None:
    ws, ref = workspace(tmp_path_factory), reference_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("killed")
    proc = subprocess.Popen(compare_cmd(ws, out), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not list((out / "tasks").glob("*.json")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no task finished in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - killed_at < 30
    assert "Traceback" not in err and "interrupted" in err
    finished = sorted(p for p in (out / "tasks").glob("*.json"))
    assert 1 <= len(finished) < N_TASKS, "the signal must arrive midway"
    assert not (out / RESULTS_JSON).exists()
    assert temporaries(out) == []
    for path in finished:
        assert json.loads(path.read_text())["entry"]["n_prompts"] == 16
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    done = subprocess.run(compare_cmd(ws, out), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("finished earlier, reused") == len(finished)
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # reused, not recomputed
    assert_same_outputs(ref, out)
    assert temporaries(out) == []


SWEEP = """\
pairs: [{{name: tiny, teacher: {ws}/teacher, student: {ws}/student}}]
tasks: [{ws}/task0.jsonl, {ws}/task1.jsonl]
seeds: [0, 1, 2]
options: {{n_boot: 200, circuits: true, null_model: true}}
"""


@pytest.mark.slow
def test_sigint_sweep_midway_then_resume(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    import torch

    from circuitdiff.sweep.merge import COMPONENTS_MERGED, JOBS_TABLE
    from circuitdiff.sweep.runner import run_sweep
    from circuitdiff.sweep.spec import load_sweep

    ws = workspace(tmp_path_factory)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP.format(ws=ws), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "circuitdiff.cli.main", "sweep", str(sweep), "--out", str(out)]
    # a shell's background job inherits SIGINT ignored (and Python then installs no handler): restore it
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(out.glob("jobs/*/*/*/job.json")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no job finished in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    done = len(list(out.glob("jobs/*/*/*/job.json")))
    assert 1 <= done < 6 and not (out / JOBS_TABLE).exists() and temporaries(out) == []

    resumed = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done} of 6 jobs finished earlier: skipped" in resumed.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1)
    try:
        run_sweep(load_sweep(sweep), tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    for name in (JOBS_TABLE, COMPONENTS_MERGED):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name).drop(columns="job", errors="ignore"),
                                      pd.read_parquet(tmp_path / "reference" / name).drop(columns="job", errors="ignore"))
