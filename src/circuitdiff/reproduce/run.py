"""Run a reproduction plan job by job, each saved as it finishes, then write the table.

Why job by job: the study is hours of compute for its Hub pairs; a job that finishes is
kept (the sweep's ``job.json`` marker, and ``compare``'s own per-task checkpoints inside
it), so an interrupted reproduce resumes where it stopped. A job that fails (a model
missing here, a task its tokenizer cannot encode, a comparison ``compare`` refuses) is
recorded with its one-line reason and the others go on: the table then shows that row
as failed, with the reason, never a number.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from circuitdiff.reproduce.plan import Plan, ReproJob
from circuitdiff.reproduce.render import html_page, markdown
from circuitdiff.reproduce.table import FAILED, reproduce_frame
from circuitdiff.results import write_json, write_table
from circuitdiff.sweep.jobs import is_done, job_dir, job_key, run_job
from circuitdiff.sweep.merge import write_text

TABLE_CSV, TABLE_PARQUET, TABLE_MD, TABLE_HTML = "reproduce.csv", "reproduce.parquet", "reproduce.md", "reproduce.html"
PLAN_JSON = "plan.json"


@dataclass
class Outcome:
    out: Path
    table: pd.DataFrame
    done: int = 0
    reused: int = 0
    failed: list[tuple[ReproJob, str]] = field(default_factory=list)


def _run_one(rj: ReproJob, out: Path, report: bool) -> str | None:
    """Run one job (``sweep.jobs.run_job``) and write its report; the error line if it failed."""
    folder = job_dir(out, rj.job)
    try:
        outcome = run_job(rj.job, str(out), rj.settings)
        error = None if outcome["ok"] else str(outcome["error"])
        if error is None and report:
            from circuitdiff.report import render_from_folder

            render_from_folder(folder)
    except Exception as exc:  # noqa: BLE001  one broken job must not end a run of hours; its reason is kept
        last = traceback.extract_tb(exc.__traceback__)[-1]
        error = f"unexpected {type(exc).__name__} in {Path(last.filename).name}:{last.lineno}: {exc}"
    if error is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / FAILED, {"key": job_key(rj.job, rj.settings), "error": " ".join(error.split())})
    else:
        (folder / FAILED).unlink(missing_ok=True)
    return error


def write_table_files(out: Path, plan: Plan, title: str) -> pd.DataFrame:
    """The long table (CSV, Parquet) and its readable pivots (Markdown, HTML) from what the jobs wrote."""
    frame = reproduce_frame(out, plan.jobs)
    write_table(out / TABLE_PARQUET, frame)
    write_text(out / TABLE_CSV, frame.to_csv(index=False))
    write_text(out / TABLE_MD, markdown(frame, title))
    write_text(out / TABLE_HTML, html_page(frame, title, out))
    return frame


def run_plan(plan: Plan, out: Path, *, title: str, report: bool = True,
             echo: Callable[[str], None] = lambda _msg: None) -> Outcome:
    """Run every job not finished earlier, rewriting the table after each, so it is current when interrupted."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN_JSON, {"jobs": [rj.describe() for rj in plan.jobs],
                                 "skipped": [{"pair": p, "reason": r} for p, r in plan.skipped]})
    result = Outcome(out, pd.DataFrame())
    for i, rj in enumerate(plan.jobs, 1):
        label = f"[{i}/{len(plan.jobs)}] {rj.job.label}"
        if rj.settings.resume and is_done(out, rj.job, rj.settings):
            result.reused += 1
            echo(f"{label}: finished earlier, reused")
            continue
        error = _run_one(rj, out, report)
        if error is None:
            result.done += 1
            echo(f"{label}: done")
        else:
            result.failed.append((rj, error))
            echo(f"{label}: failed: {error}")
        write_table_files(out, plan, title)
    result.table = write_table_files(out, plan, title)
    return result
