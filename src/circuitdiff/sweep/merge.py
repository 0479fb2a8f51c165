"""Merge a sweep's jobs: one table (Parquet) and one summary report (Markdown and HTML).

``sweep.parquet`` has one row per job (pair, recipe, task, seed, ablation, alignment with
its interval and null, clean metrics, concentration of both models);
``sweep_components.parquet`` stacks every job's components table. The summary groups
seeds: per pair, task and ablation, the mean alignment over seeds with the mean of the
per-seed 95% bootstrap bounds and the seed-to-seed range, and the concentration contrast
(how many components each model effectively relies on, and the top component's share).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuitdiff.results import COMPONENTS_TABLE, atomic_write, load_results, write_table
from circuitdiff.schema import Results
from circuitdiff.sweep.jobs import job_dir
from circuitdiff.sweep.spec import Job

JOBS_TABLE = "sweep.parquet"
COMPONENTS_MERGED = "sweep_components.parquet"
SUMMARY_MD = "summary.md"
SUMMARY_HTML = "summary.html"
KEYS = ("pair", "recipe", "task", "seed", "ablation")
CONCENTRATION = ("effective_number", "gini", "top_1_share", "n_for_0.8", "worst_drop", "severity_tail")


def job_row(job: Job, results: Results, folder: str) -> dict[str, Any]:
    """The headline numbers of one job (each job has exactly one task)."""
    (entry,) = results.tasks.values()
    al = entry.alignment
    row: dict[str, Any] = {"pair": job.pair.name, "recipe": job.pair.recipe, "task": job.task_label, "seed": job.seed,
                           "ablation": job.ablation, "teacher": results.teacher.name,
                           "student": results.student.name, "n_prompts": entry.n_prompts,
                           "alignment": al.score, "alignment_lo": al.ci[0], "alignment_hi": al.ci[1],
                           "alignment_null": al.null, "paper_alignment": al.paper}
    for role in Results.ROLES:
        model = entry.model(role)
        row[f"{role}_clean"] = model.clean_metric
        row[f"{role}_accuracy"] = model.accuracy
        for key in CONCENTRATION:
            stat = entry.concentration[role].get(key)
            row[f"{role}_{key}"] = stat.point if stat is not None else None
    row["job"] = folder
    return row


def jobs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    text = {"pair", "recipe", "task", "ablation", "teacher", "student", "job"}
    for col in frame.columns:  # all-None columns would otherwise become object
        if col in ("seed", "n_prompts"):
            frame[col] = frame[col].astype("int64")
        elif col not in text:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def summary_frame(jobs: pd.DataFrame) -> pd.DataFrame:
    """Seeds pooled per pair, recipe, task and ablation."""
    groups = jobs.groupby(["pair", "recipe", "task", "ablation"], sort=False)
    out = groups.agg(
        seeds=("seed", "count"), alignment=("alignment", "mean"), ci_lo=("alignment_lo", "mean"),
        ci_hi=("alignment_hi", "mean"), seed_min=("alignment", "min"), seed_max=("alignment", "max"),
        null=("alignment_null", "mean"), teacher_effective=("teacher_effective_number", "mean"),
        student_effective=("student_effective_number", "mean"), teacher_top1=("teacher_top_1_share", "mean"),
        student_top1=("student_top_1_share", "mean"),
    ).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["effective_ratio"] = out["student_effective"] / out["teacher_effective"]
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "—" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


COLUMNS = (("pair", "pair"), ("recipe", "recipe"), ("task", "task"), ("ablation", "ablation"), ("seeds", "seeds"),
           ("alignment", "alignment"), ("interval", "95% interval"), ("range", "seed range"), ("null", "null"),
           ("effective", "effective # (teacher → student)"), ("effective_ratio", "student/teacher"),
           ("top1", "top-1 share (teacher → student)"))


def _cells(row: pd.Series) -> dict[str, str]:
    return {"pair": row["pair"], "recipe": row["recipe"] or "—", "task": row["task"], "ablation": row["ablation"],
            "seeds": str(row["seeds"]), "alignment": _fmt(row["alignment"]),
            "interval": f"[{_fmt(row['ci_lo'])}, {_fmt(row['ci_hi'])}]",
            "range": f"{_fmt(row['seed_min'])}–{_fmt(row['seed_max'])}", "null": _fmt(row["null"]),
            "effective": f"{_fmt(row['teacher_effective'])} → {_fmt(row['student_effective'])}",
            "effective_ratio": _fmt(row["effective_ratio"]),
            "top1": f"{_fmt(row['teacher_top1'])} → {_fmt(row['student_top1'])}"}


INTRO = ("Alignment: mean over seeds of the alignment score; interval: mean of the per-seed 95% bootstrap "
         "bounds (over prompts); seed range: lowest and highest seed. Concentration contrast: the effective "
         "number of components each model relies on (exp of the entropy of |effect| shares) and the top "
         "component's share; a student/teacher ratio below 1 means the student concentrates its reliance.")


def summary_markdown(name: str, summary: pd.DataFrame, n_jobs: int) -> str:
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")
    lines = [f"# Sweep {esc(name)}", "", f"{n_jobs} jobs. {INTRO}", "",
             "| " + " | ".join(label for _, label in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, row in summary.iterrows():
        cells = _cells(row)
        lines.append("| " + " | ".join(esc(cells[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def summary_html(name: str, summary: pd.DataFrame, n_jobs: int) -> str:
    e = html.escape
    head = "".join(f"<th>{e(label)}</th>" for _, label in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(_cells(row)[key])}</td>" for key, _ in COLUMNS) + "</tr>"
                   for _, row in summary.iterrows())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {e(name)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
            f"<h1>Sweep {e(name)}</h1><p>{n_jobs} jobs. {e(INTRO)}</p><p>Per job: {JOBS_TABLE}; components of "
            f"every job: {COMPONENTS_MERGED}.</p><table><tr>{head}</tr>{body}</table></body></html>\n")


def write_text(path: Path, text: str) -> None:
    """Atomically, like every other output."""
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def merge(out: Path, name: str, jobs: Sequence[Job]) -> pd.DataFrame:
    """Write the merged tables and the summary report from finished jobs, in job order."""
    rows, components = [], []
    for job in jobs:
        folder = job_dir(out, job)
        results = load_results(folder)
        rel = folder.relative_to(out).as_posix()
        rows.append(job_row(job, results, rel))
        comp = pd.read_parquet(folder / COMPONENTS_TABLE).drop(columns=["task"])  # one task per job
        for i, key in enumerate(KEYS):
            comp.insert(i, key, rows[-1][key])
        components.append(comp)
    table = jobs_frame(rows)
    summary = summary_frame(table)
    write_table(out / JOBS_TABLE, table)
    write_table(out / COMPONENTS_MERGED, pd.concat(components, ignore_index=True))
    write_text(out / SUMMARY_MD, summary_markdown(name, summary, len(jobs)))
    write_text(out / SUMMARY_HTML, summary_html(name, summary, len(jobs)))
    return table
