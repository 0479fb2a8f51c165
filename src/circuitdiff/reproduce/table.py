"""circuitdiff's figures beside the study's published ones: one long table, plain data.

One row per job (pair, task, ablation), figure, model and (for circuits) threshold, with
the published value beside the computed one. Every planned figure gets a row, run or not,
so the published column is complete; where circuitdiff gives no number the row says why
(``status`` 'withheld' with the reason from the run's notes, 'failed' with the job's error,
'not run' before the job ran), never a made-up value. Reads only ``results.json`` files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.reproduce.plan import ReproJob
from circuitdiff.reproduce.published import STUDY_PAIRS, published
from circuitdiff.results import load_results
from circuitdiff.schema import Results, TaskResult
from circuitdiff.sweep.jobs import is_done, job_dir, job_key

FAILED = "failed.json"
"""Written into a job's folder when the job stops on its input; its error is the row's reason."""
COLUMNS = ("pair", "study_pair", "teacher", "student", "protocol_task", "task", "ablation", "n_prompts", "figure", "model",
           "threshold", "circuitdiff", "lo", "hi", "null", "null_q95", "above_chance", "status", "reason",
           "published", "published_low", "published_high", "published_scope", "published_for", "job")
ROLES = ("teacher", "student")
FIGURES: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("paper_alignment", None, ("paper", "metric")),
    ("alignment", None, ("interval", "null", "similarity")),
    ("accuracy", "role", ()),
    ("worst_head_drop_pct", "role", ("metric",)),
    ("mean_head_drop_pct", "role", ("metric",)),
)
"""(figure, per model or per pair, note topics that explain a withheld value)."""
CIRCUIT_TOPICS = ("circuit", "metric")


def _reason(results: Results, task: str, topics: Sequence[str], role: str | None) -> str:
    """The run's own explanation for a missing figure: the first matching note, by topic and model."""
    other = None if role is None else ROLES[1 - ROLES.index(role)]
    for note in results.task_notes(task):
        if note.topic not in topics:
            continue
        if other is not None and (note.role == other or (note.model and note.model == results.model(other).name
                                                         and note.model != results.model(role).name)):
            continue
        return f"model '{note.model}': {note.text}" if note.model else note.text
    return "withheld by circuitdiff (see notes in results.json)"


def _drop(entry: TaskResult, role: str, key: str) -> tuple[float | None, float | None, float | None]:
    stat = entry.concentration_heads.get(role, {}).get(key)
    return (stat.point, stat.lo, stat.hi) if stat is not None else (None, None, None)


def _values(entry: TaskResult, figure: str, role: str | None) -> dict[str, Any]:
    """circuitdiff's value of one figure (None where it is withheld)."""
    if figure == "paper_alignment":
        return {"circuitdiff": entry.alignment.paper}
    if figure == "alignment":
        al = entry.alignment
        return {"circuitdiff": al.score, "lo": al.ci[0], "hi": al.ci[1], "null": al.null, "null_q95": al.null_q95,
                "above_chance": al.above_chance}
    if figure == "accuracy":
        return {"circuitdiff": entry.model(role).accuracy}
    point, lo, hi = _drop(entry, role, "worst_drop" if figure.startswith("worst") else "mean_drop")
    return {"circuitdiff": point, "lo": lo, "hi": hi}


def _circuit_size(entry: TaskResult, role: str, threshold: float, kind: str) -> int | None:
    for item in entry.circuit.get("thresholds", []):
        if abs(float(item["threshold"]) - threshold) < 1e-9 and item.get(role):
            names = item[role]["components"]
            return sum(1 for n in names if n.endswith(".MLP")) if kind == "mlps" else sum(1 for n in names if ".H" in n)
    return None


def _cells(rj: ReproJob) -> Iterator[tuple[str, str, float | None, tuple[str, ...]]]:
    """(figure, model, threshold, topics) for every figure a job reports."""
    for figure, per, topics in FIGURES:
        for model in (ROLES if per else ("pair",)):
            yield figure, model, None, topics
    for threshold in rj.thresholds:
        for kind in ("heads", "mlps"):
            for role in ROLES:
                yield f"circuit_{kind}", role, threshold, CIRCUIT_TOPICS


def _outcome(out: Path, rj: ReproJob) -> tuple[Results | None, str]:
    """The job's results if this very job finished (its marker matches), or why there are none.

    A ``results.json`` left by an earlier run with other options is not this job's result.
    """
    if is_done(out, rj.job, rj.settings):
        return load_results(job_dir(out, rj.job)), ""
    try:
        failed = json.loads((job_dir(out, rj.job) / FAILED).read_text(encoding="utf-8"))
        if failed["key"] == job_key(rj.job, rj.settings):  # this very job failed, not one with other options
            return None, "failed: " + failed["error"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None, "not run: the job has not finished (the same command resumes it)"


def job_rows(out: Path, rj: ReproJob) -> list[dict[str, Any]]:
    """Every figure of one job, computed or with the reason it is missing, beside the published value."""
    folder = job_dir(out, rj.job)
    results, why = _outcome(out, rj)
    entry = results.tasks.get(rj.job.task) if results is not None else None
    if results is not None and entry is None:
        results, why = None, f"failed: results.json has no task '{rj.job.task}'"
    base = {"pair": rj.pair.name, "study_pair": rj.pair.study_pair, "teacher": rj.pair.teacher,
            "student": rj.pair.student, "protocol_task": rj.protocol_task, "task": rj.job.task,
            "ablation": rj.job.ablation, "n_prompts": entry.n_prompts if entry is not None else None,
            "job": folder.relative_to(out).as_posix()}
    rows = []
    for figure, model, threshold, topics in _cells(rj):
        row: dict[str, Any] = {**base, "figure": figure, "model": model, "threshold": threshold}
        pub = published(rj.pair.study_pair, rj.protocol_task, figure, model, threshold)
        if pub is not None:
            row.update(published=pub.text, published_low=pub.low, published_high=pub.high, published_scope=pub.scope,
                       published_for=STUDY_PAIRS[rj.pair.study_pair])
        if entry is None:
            row.update(status=why.split(":")[0], reason=why)
        else:
            role = None if model == "pair" else model
            if threshold is not None:
                value = {"circuitdiff": _circuit_size(entry, model, threshold, figure.split("_")[1])}
            else:
                value = _values(entry, figure, role)
            row.update(value)
            missing = value["circuitdiff"] is None
            row.update(status="withheld" if missing else "computed",
                       reason=_reason(results, rj.job.task, topics, role) if missing else "")
        rows.append(row)
    return rows


def reproduce_frame(out: Path, jobs: Sequence[ReproJob]) -> pd.DataFrame:
    """The whole table for a plan, from whatever its jobs have written under ``out`` so far."""
    frame = pd.DataFrame([row for rj in jobs for row in job_rows(Path(out), rj)], columns=list(COLUMNS))
    for col in ("threshold", "circuitdiff", "lo", "hi", "null", "null_q95", "published_low", "published_high"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["above_chance"] = frame["above_chance"].astype("boolean")
    frame["n_prompts"] = frame["n_prompts"].astype("Int64")
    for col in set(COLUMNS) - {"threshold", "circuitdiff", "lo", "hi", "null", "null_q95", "published_low",
                               "published_high", "above_chance", "n_prompts"}:
        frame[col] = frame[col].astype("string")
    return frame
