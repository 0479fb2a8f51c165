"""Run a sweep: check inputs, skip finished jobs, run the rest on a backend, merge.

Everything that can be checked without loading a model (the sweep file, task files, model
folders, the backend) is checked before the first job starts. A job that fails on its
input (e.g. an answer that is not one token for a tokenizer) does not stop the others;
the sweep then ends with a one-line error and no merged table, and a rerun resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from circuitdiff.errors import CircuitDiffError
from circuitdiff.sweep.backends import check_backend, run_local, run_ray
from circuitdiff.sweep.jobs import JOBS_DIR, RunSettings, is_done, job_dir
from circuitdiff.sweep.merge import merge
from circuitdiff.sweep.spec import Job, SweepSpec


class SweepJobsError(CircuitDiffError):
    """Some jobs of a sweep failed on their input."""


@dataclass
class SweepOutcome:
    out: Path
    jobs: list[Job]
    skipped: int = 0
    failed: list[tuple[Job, str]] = field(default_factory=list)
    seconds: float = 0.0
    table: pd.DataFrame | None = None


def preflight(spec: SweepSpec, settings: RunSettings) -> None:
    """Task files parse and model folders exist and are safe, before any job starts."""
    from circuitdiff.models.loading import check_local_folder, resolve
    from circuitdiff.tasks import BUILTIN_TASKS
    from circuitdiff.tasks.jsonl import load_jsonl_task

    for task in spec.tasks:
        if task not in BUILTIN_TASKS:
            load_jsonl_task(task)
    for model in sorted({m for p in spec.pairs for m in (p.teacher, p.student)}):
        location, local = resolve(model)
        if local and not location.endswith(".gguf"):
            check_local_folder(Path(location), settings.allow_pickle)


def _check_folders(out: Path, jobs: list[Job]) -> None:
    """Distinct jobs need distinct folders, also on case-insensitive file systems."""
    seen: dict[str, Job] = {}
    for job in jobs:
        key = job_dir(out, job).as_posix().lower()
        if key in seen:
            raise CircuitDiffError(f"jobs '{seen[key].label}' and '{job.label}' would share a folder; rename a pair or task")
        seen[key] = job


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a writer that was killed hard (SIGKILL); never complete results."""
    for tmp in (out / JOBS_DIR).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def run_sweep(spec: SweepSpec, out: str | Path, settings: RunSettings = RunSettings(), backend: str = "local", *,
              address: str | None = None, cpus_per_job: float = 1, gpus_per_job: float = 0,
              num_cpus: int | None = None, echo: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every unfinished job of ``spec`` into ``out/jobs/...`` and merge them into ``out``."""
    check_backend(backend)
    say = echo or (lambda _msg: None)
    out = Path(out).expanduser().resolve()
    jobs = spec.jobs()
    _check_folders(out, jobs)
    preflight(spec, settings)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    result = SweepOutcome(out, jobs)
    todo = [(i, job) for i, job in enumerate(jobs) if not (settings.resume and is_done(out, job, settings))]
    result.skipped = len(jobs) - len(todo)
    if result.skipped:
        say(f"{result.skipped} of {len(jobs)} jobs finished earlier: skipped")
    finished = result.skipped

    def on_done(index: int, outcome: dict) -> None:
        nonlocal finished
        finished += 1
        job = jobs[index]
        if outcome["ok"]:
            say(f"[{finished}/{len(jobs)}] {job.label}: done in {outcome['seconds']:.1f} s")
        else:
            error = (str(outcome["error"]).splitlines() or ["failed"])[0]
            result.failed.append((job, error))
            say(f"[{finished}/{len(jobs)}] {job.label}: failed: {error}")

    start = time.perf_counter()
    if backend == "local":
        run_local(todo, str(out), settings, on_done)
    else:
        run_ray(todo, str(out), settings, on_done, address=address, cpus_per_job=cpus_per_job,
                gpus_per_job=gpus_per_job, num_cpus=num_cpus)
    result.seconds = time.perf_counter() - start
    if result.failed:
        job, error = result.failed[0]
        raise SweepJobsError(f"{len(result.failed)} of {len(jobs)} jobs failed, first {job.label}: {error} "
                             "(finished jobs are kept; fix and rerun to resume)")
    result.table = merge(out, spec.name, jobs)
    return result
