"""Sweeps end to end on tiny models: local backend, resume, interruption, failures, Ray.

One module-scoped reference run on the local backend; the Ray test runs the same sweep on
a local Ray instance and checks the merged tables are equal, and prints both wall times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from circuitdiff.errors import CircuitDiffError
from circuitdiff.results import load_results
from circuitdiff.sweep.jobs import DONE, RunSettings, job_dir
from circuitdiff.sweep.merge import COMPONENTS_MERGED, JOBS_TABLE, SUMMARY_HTML, SUMMARY_MD
from circuitdiff.sweep.runner import SweepJobsError, run_sweep
from circuitdiff.sweep.spec import load_sweep
from test_resume_kill import write_word_task
from tiny_models import save_tiny

SWEEP = """\
name: tiny sweep
pairs:
  - {name: tiny, teacher: teacher, student: student, recipe: random-init}
tasks: [alpha.jsonl, beta.jsonl]
seeds: [0, 1]
ablations: [mean]
options: {n_boot: 10, circuits: false, null_model: false}
"""
TIMINGS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and Ray workers use one: same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep-ws")
    save_tiny("gpt2", root / "teacher", seed=0)
    save_tiny("gpt2", root / "student", seed=1, n_layers=1)
    write_word_task(root / "alpha.jsonl", seed=10, n=8)
    write_word_task(root / "beta.jsonl", seed=11, n=8)
    (root / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def reference(ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep-local")
    torch.set_num_threads(1)
    start = time.perf_counter()
    run_sweep(load_sweep(ws / "sweep.yaml"), out)
    TIMINGS["local"] = time.perf_counter() - start
    return out


def test_local_sweep_writes_jobs_merged_table_and_summary(ws: Path, reference: Path) -> None:
    table = pd.read_parquet(reference / JOBS_TABLE)
    assert len(table) == 4
    assert list(table[["pair", "recipe", "task", "seed", "ablation"]].itertuples(index=False, name=None)) == [
        ("tiny", "random-init", "alpha", 0, "mean"), ("tiny", "random-init", "alpha", 1, "mean"),
        ("tiny", "random-init", "beta", 0, "mean"), ("tiny", "random-init", "beta", 1, "mean")]
    # 8 prompts of random models: an interval may be withheld (bias beyond spread), but only whole,
    # with a note that says why, and where given it contains its point
    given = table[["alignment_lo", "alignment_hi"]].notna().all(axis=1)
    assert (given | table[["alignment_lo", "alignment_hi"]].isna().all(axis=1)).all() and given.sum() >= 2
    inside = (table["alignment_lo"] <= table["alignment"]) & (table["alignment"] <= table["alignment_hi"])
    assert inside[given].all()
    for rel in table.loc[~given, "job"]:
        assert any(n.code.startswith("interval.") for n in load_results(reference / rel).notes), rel
    assert table["teacher_effective_number"].notna().all()
    components = pd.read_parquet(reference / COMPONENTS_MERGED)
    assert set(components["task"]) == {"alpha", "beta"} and len(components) == (10 + 5) * 4
    summary = (reference / SUMMARY_MD).read_text()
    assert "| tiny | random-init | alpha | mean | 2 |" in summary
    assert "<table>" in (reference / SUMMARY_HTML).read_text()
    for job in load_sweep(ws / "sweep.yaml").jobs():
        assert (job_dir(reference, job) / "results.json").is_file() and (job_dir(reference, job) / DONE).is_file()


def test_rerun_skips_every_finished_job(ws: Path, reference: Path) -> None:
    spec = load_sweep(ws / "sweep.yaml")
    stamps = {job: (job_dir(reference, job) / "results.json").stat().st_mtime_ns for job in spec.jobs()}
    before = pd.read_parquet(reference / JOBS_TABLE)
    said: list[str] = []
    outcome = run_sweep(spec, reference, echo=said.append)
    assert outcome.skipped == 4 and said == ["4 of 4 jobs finished earlier: skipped"]
    assert {job: (job_dir(reference, job) / "results.json").stat().st_mtime_ns for job in spec.jobs()} == stamps
    pd.testing.assert_frame_equal(pd.read_parquet(reference / JOBS_TABLE), before)


def test_changed_options_rerun_the_jobs(ws: Path, reference: Path, tmp_path: Path) -> None:
    changed = tmp_path / "sweep.yaml"
    changed.write_text(SWEEP.replace("n_boot: 10", "n_boot: 11").replace("teacher: teacher", f"teacher: {ws}/teacher")
                       .replace("student: student", f"student: {ws}/student")
                       .replace("[alpha.jsonl, beta.jsonl]", f"[{ws}/alpha.jsonl, {ws}/beta.jsonl]"))
    out = tmp_path / "out"
    run_sweep(load_sweep(ws / "sweep.yaml"), out, echo=None)
    outcome = run_sweep(load_sweep(changed), out)
    assert outcome.skipped == 0


def test_interrupted_sweep_resumes_to_the_same_table(ws: Path, reference: Path, tmp_path: Path) -> None:
    spec = load_sweep(ws / "sweep.yaml")

    def interrupt_after_first(message: str) -> None:
        if message.startswith("[1/4]"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, echo=interrupt_after_first)
    assert not (tmp_path / JOBS_TABLE).exists()
    assert sum((job_dir(tmp_path, job) / DONE).is_file() for job in spec.jobs()) == 1
    outcome = run_sweep(spec, tmp_path)
    assert outcome.skipped == 1
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / JOBS_TABLE).drop(columns="job"),
                                  pd.read_parquet(reference / JOBS_TABLE).drop(columns="job"))


def test_a_failing_job_stops_the_merge_not_the_others(ws: Path, tmp_path: Path) -> None:
    bad = tmp_path / "too-long.jsonl"  # longer than the models' context: found only when the job encodes it
    rows = [{"prompt": " ".join(["w1 w2 w3"] * 100), "answer": " w4", "distractor": " w6"}] * 4
    bad.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"pairs: [{{teacher: {ws}/teacher, student: {ws}/student}}]\n"
                     f"tasks: [{ws}/alpha.jsonl, too-long.jsonl]\noptions: {{n_boot: 10, circuits: false}}\n")
    with pytest.raises(SweepJobsError) as err:
        run_sweep(load_sweep(sweep), tmp_path / "out")
    assert "1 of 2 jobs failed" in str(err.value) and "\n" not in str(err.value) and "context" in str(err.value)
    assert not (tmp_path / "out" / JOBS_TABLE).exists()
    good = load_sweep(sweep).jobs()[0]
    assert (job_dir(tmp_path / "out", good) / DONE).is_file()


def test_missing_inputs_fail_before_any_job(ws: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"pairs: [{{teacher: {ws}/teacher, student: ./nowhere/student}}]\ntasks: [ioi]\n")
    with pytest.raises(CircuitDiffError, match="not found"):
        run_sweep(load_sweep(sweep), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_backend_equals_local(ws: Path, reference: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'circuitdiff[ray]')")
    start = time.perf_counter()
    outcome = run_sweep(load_sweep(ws / "sweep.yaml"), tmp_path, RunSettings(), "ray", num_cpus=2)
    TIMINGS["ray"] = time.perf_counter() - start
    assert outcome.skipped == 0 and not outcome.failed
    for name in (JOBS_TABLE, COMPONENTS_MERGED):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name), pd.read_parquet(reference / name))
    print(f"\nsweep wall time: local {TIMINGS['local']:.1f} s, ray (local instance, 2 CPUs) {TIMINGS['ray']:.1f} s")
