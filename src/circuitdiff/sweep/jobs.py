"""One sweep job: a ``compare`` run into its own folder, counted as done only when complete.

A job's folder gets the usual outputs of ``compare`` (each written atomically) and then
``job.json``, the marker that it finished, holding the job's description: a restarted
sweep skips a job only if its marker describes exactly the same job. Jobs run in the
sweep's own process (local backend) or in Ray workers; both call ``run_job``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitdiff.errors import CircuitDiffError
from circuitdiff.interventions.choices import DEFAULT_MEMORY_BUDGET
from circuitdiff.names import inside
from circuitdiff.results import RESULTS_JSON, write_json
from circuitdiff.schema import json_ready
from circuitdiff.sweep.spec import Job

JOBS_DIR = "jobs"
DONE = "job.json"


@dataclass(frozen=True)
class RunSettings:
    """How jobs run on this machine: command-line flags, never from the sweep file."""

    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    """Bytes of activations per forward pass; 0 = automatic."""
    allow_pickle: bool = False
    trust_remote_code: bool = False
    resume: bool = True


def job_dir(out: Path, job: Job) -> Path:
    return inside(Path(out) / JOBS_DIR, *job.parts)


def job_key(job: Job, settings: RunSettings) -> dict[str, Any]:
    """What must match for finished results to be reused (the dtype changes the numbers)."""
    from circuitdiff import __version__

    return json_ready({**job.describe(), "dtype": settings.dtype, "circuitdiff_version": __version__})


def is_done(out: Path, job: Job, settings: RunSettings) -> bool:
    folder = job_dir(out, job)
    try:
        marker = json.loads((folder / DONE).read_text(encoding="utf-8"))
        return marker.get("key") == job_key(job, settings) and (folder / RESULTS_JSON).is_file()
    except (OSError, ValueError, AttributeError):
        return False


_MODELS: dict[tuple[Any, ...], Any] = {}


def _stamp(spec: str) -> tuple[Any, ...]:
    """Sizes and times of a local model folder's files: a model changed on disk is loaded again."""
    path = Path(spec)
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path] if path.is_file() else []
        return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    except OSError:
        return ()


def _load(spec: str, settings: RunSettings) -> Any:
    """Models of the current pair stay loaded for the next job (jobs are ordered by pair)."""
    from circuitdiff.models.loading import load_model
    from circuitdiff.resources import parse_dtype

    key = (spec, _stamp(spec), settings.device, settings.dtype, settings.device_map, settings.allow_pickle,
           settings.trust_remote_code)
    if key not in _MODELS:
        if len(_MODELS) >= 2:
            _MODELS.clear()
        _MODELS[key] = load_model(spec, allow_pickle=settings.allow_pickle, trust_remote_code=settings.trust_remote_code,
                                  device=settings.device, dtype=parse_dtype(settings.dtype), device_map=settings.device_map)
    return _MODELS[key]


def compare_options(job: Job, settings: RunSettings) -> Any:
    from circuitdiff.compare import CompareOptions
    from circuitdiff.interventions.ablation import Ablation
    from circuitdiff.interventions.methods import Method

    opts = dict(job.options)
    if "method" in opts:
        opts["method"] = Method(opts["method"])
    return CompareOptions(ablation=Ablation(job.ablation), seed=job.seed, memory_budget=settings.memory_budget, **opts)


def run_job(job: Job, out: str, settings: RunSettings) -> dict[str, Any]:
    """Run one job; user errors come back as ``{"ok": False, "error": ...}``, bugs raise."""
    from circuitdiff.compare import compare

    start = time.perf_counter()
    try:
        folder = job_dir(Path(out), job)
        options = compare_options(job, settings)
        if not settings.resume:
            _clear(folder)
        teacher, student = _load(job.pair.teacher, settings), _load(job.pair.student, settings)
        compare(teacher, student, [job.task], options, folder, resume=settings.resume, progress=False, report=False)
        seconds = time.perf_counter() - start
        write_json(folder / DONE, {"key": job_key(job, settings), "seconds": seconds})
        return {"ok": True, "seconds": seconds}
    except CircuitDiffError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - start}


def _clear(folder: Path) -> None:
    """Forget a previous run of this job (``--no-resume``): its marker and task checkpoints."""
    (folder / DONE).unlink(missing_ok=True)
