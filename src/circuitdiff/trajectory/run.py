"""Compare the teacher with each checkpoint in turn, reusing checkpoints an earlier run finished.

Each checkpoint's comparison is an ordinary ``compare`` into ``OUT/steps/step-NNNNNN``. A
``done.json`` beside it records what was compared (options, tasks, the checkpoint's weight
files); when it still matches, the results are read back without loading any model.
Checkpoints run on the sweep's backends: ``local`` (this process, one after another) or
``ray`` (one job per checkpoint). A process keeps the teacher loaded and its task runs
and the random students (``SharedRuns``), so the teacher and the null are run once per task, not
once per checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.errors import CircuitDiffError
from circuitdiff.options import CompareOptions
from circuitdiff.results import RESULTS_JSON, read_results, write_json
from circuitdiff.schema import json_ready
from circuitdiff.sweep.jobs import RunSettings
from circuitdiff.trajectory.checkpoints import Checkpoint, TrajectoryError, find_checkpoints
from circuitdiff.trajectory.rows import trajectory_rows, write_trajectory_table

STEPS_DIR = "steps"
DONE_FILE = "done.json"
OnCheckpoint = Callable[[Checkpoint, dict[str, Any]], None]
"""Told of each checkpoint when it is settled: ``{"reused": True}`` or the job's outcome."""


@dataclass(frozen=True)
class CheckpointJob:
    """One checkpoint's comparison: what a backend runs (picklable, for Ray workers)."""

    teacher: Any
    """A model spec string, or (local backend only) a ``LoadedModel``."""
    checkpoint: Checkpoint
    tasks: tuple[str, ...]
    options: CompareOptions
    folder: Path
    identity: dict[str, Any]
    progress: bool = False


def _identity(checkpoint: Checkpoint, tasks: Sequence[str], options: CompareOptions, teacher: str) -> dict[str, Any]:
    """What a finished comparison must match to be reused: the weights (size, mtime), tasks and options."""
    weights = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in checkpoint.folder.iterdir()
                     if f.suffix in (".safetensors", ".bin", ".gguf", ".json"))
    return json_ready({"teacher": teacher, "checkpoint": str(checkpoint.folder.resolve()), "weights": weights,
                       "tasks": list(tasks), "options": asdict(options)})


def _finished(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    done = folder / DONE_FILE
    if not (done.is_file() and (folder / RESULTS_JSON).is_file()):
        return None
    try:
        if json.loads(done.read_text()) != identity:
            return None
        return read_results(folder)
    except ValueError:
        return None


def _absolute(spec: str) -> str:
    """A local folder or file as an absolute path (a name or Hub id stays as it is)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


_TEACHER: dict[str, Any] = {}
"""This process's teacher and its task runs, kept from one checkpoint job to the next."""


def _teacher(spec: Any, settings: RunSettings) -> tuple[Any, Any]:
    """The loaded teacher and its ``SharedRuns`` (one teacher kept per process: a Ray worker or this one)."""
    from circuitdiff.compare import as_loaded_model
    from circuitdiff.resources import parse_dtype
    from circuitdiff.shared_runs import SharedRuns

    key = (spec if isinstance(spec, str) else id(spec), settings)
    if _TEACHER.get("key") != key:
        _TEACHER.clear()
        loaded = as_loaded_model(spec, allow_pickle=settings.allow_pickle, device=settings.device,
                                 trust_remote_code=settings.trust_remote_code, dtype=parse_dtype(settings.dtype),
                                 device_map=settings.device_map)
        _TEACHER.update(key=key, runs=SharedRuns(loaded))
    runs = _TEACHER["runs"]
    return runs.teacher, runs


def compare_checkpoint(job: CheckpointJob, out: str, settings: RunSettings) -> dict[str, Any]:
    """Run one checkpoint's comparison and mark it done; input errors come back as ``{"ok": False}``."""
    from circuitdiff.compare import compare
    from circuitdiff.resources import parse_dtype

    start = time.perf_counter()
    try:
        teacher, runs = _teacher(job.teacher, settings)
        compare(teacher, str(job.checkpoint.folder), list(job.tasks), job.options, out=job.folder,
                progress=job.progress, report=False, shared=runs, allow_pickle=settings.allow_pickle,
                trust_remote_code=settings.trust_remote_code, device=settings.device,
                dtype=parse_dtype(settings.dtype), device_map=settings.device_map)
        write_json(job.folder / DONE_FILE, job.identity)
        return {"ok": True, "seconds": time.perf_counter() - start}
    except CircuitDiffError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - start}


def run_trajectory(teacher: Any, runs: Sequence[str | Path], tasks: Sequence[str], out: str | Path,
                   options: CompareOptions | None = None, *, progress: bool = True,
                   on_checkpoint: OnCheckpoint | None = None, settings: RunSettings = RunSettings(),
                   backend: str = "local", shared: Any = None, **ray_options: Any) -> pd.DataFrame:
    """Compare ``teacher`` with every checkpoint of ``runs``; write and return ``OUT/trajectory.parquet``.

    ``teacher`` is any model ``compare`` takes (a name or folder; on the local backend also a
    ``LoadedModel``). ``backend="ray"`` runs one job per unfinished checkpoint on a Ray cluster
    (``ray_options``: ``address``, ``cpus_per_job``, ``gpus_per_job``, ``num_cpus``, as for sweeps).
    ``shared``: a ``SharedRuns`` of the loaded teacher, to share its runs and the random students
    across several trajectories (local backend; ``teacher`` is then ignored for loading).
    """
    from circuitdiff.compare import check_paths
    from circuitdiff.sweep.backends import check_backend, run_local, run_ray

    check_backend(backend)
    if shared is not None:
        if backend != "local":
            raise TrajectoryError("shared runs live in this process: use them with the local backend")
        teacher = shared.teacher
    if backend != "local" and not isinstance(teacher, (str, Path)):
        raise TrajectoryError("the ray backend loads the teacher in each worker: give it as a name or folder")
    options = options or CompareOptions()
    checkpoints = find_checkpoints(runs)
    check_paths(tasks, options, out)
    out = Path(out).expanduser().resolve()  # Ray workers need paths that do not depend on their directory
    teacher_key = str(getattr(teacher, "name", teacher))
    spec = _absolute(str(teacher)) if isinstance(teacher, (str, Path)) else teacher
    jobs = [CheckpointJob(spec, Checkpoint(c.step, c.folder.resolve()), tuple(tasks), options,
                          out / STEPS_DIR / c.label, _identity(c, tasks, options, teacher_key),
                          progress and backend == "local") for c in checkpoints]
    results = {i: _finished(job.folder, job.identity) for i, job in enumerate(jobs)}
    failed: list[tuple[Checkpoint, str]] = []

    def on_done(index: int, outcome: dict[str, Any]) -> None:
        if on_checkpoint is not None:
            on_checkpoint(jobs[index].checkpoint, outcome)
        if outcome.get("ok"):
            results[index] = read_results(jobs[index].folder)
        else:
            failed.append((jobs[index].checkpoint, str(outcome.get("error", "failed"))))

    for i, job in enumerate(jobs):
        if results[i] is not None and on_checkpoint is not None:
            on_checkpoint(job.checkpoint, {"reused": True})
    todo = [(i, job) for i, job in enumerate(jobs) if results[i] is None]
    if shared is not None:
        _TEACHER.update(key=(id(teacher), settings), runs=shared)
    try:
        if backend == "local":
            run_local(todo, str(out), settings, on_done, work=compare_checkpoint)
        else:
            run_ray(todo, str(out), settings, on_done, work=compare_checkpoint, **ray_options)
    finally:
        _TEACHER.clear()  # the teacher and its runs are not kept past this call
    if failed:
        checkpoint, error = failed[0]
        raise TrajectoryError(f"{len(failed)} of {len(jobs)} checkpoints failed, first {checkpoint.label}: "
                              f"{error.splitlines()[0] if error else 'failed'} (finished ones are kept; rerun to resume)")
    rows = [row for i, c in enumerate(checkpoints) for row in trajectory_rows(c.step, str(c.folder), results[i])]
    return write_trajectory_table(rows, out)
