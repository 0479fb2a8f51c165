"""``trajectory.html``: alignment, concentration and accuracy against training step, one column per task.

The three rows share their x axis (training step), so a reader sees whether the student's
mechanisms drift from the teacher's before, after or while its accuracy moves. Reads only
``trajectory.parquet``.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from circuitdiff.report.svg import RenderedFigure, new_figure, render_figure
from circuitdiff.results import atomic_write

TRAJECTORY_HTML = "trajectory.html"
_TEACHER = dict(color="0.45", linestyle="--", linewidth=1.0)


def _panel_alignment(ax, rows: pd.DataFrame) -> None:  # noqa: ANN001
    ax.fill_between(rows["step"], rows["alignment_lo"].astype(float), rows["alignment_hi"].astype(float),
                    alpha=0.25, color="C0", linewidth=0)
    ax.plot(rows["step"], rows["alignment"], "o-", color="C0", markersize=3, label="alignment (95% CI)")
    if rows["null"].notna().any():
        ax.plot(rows["step"], rows["null"], ":", color="C3", label="chance (random students)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("alignment")


def _panel_concentration(ax, rows: pd.DataFrame) -> None:  # noqa: ANN001
    lo, hi = rows["student_effective_number_lo"].astype(float), rows["student_effective_number_hi"].astype(float)
    ax.fill_between(rows["step"], lo, hi, alpha=0.25, color="C2", linewidth=0)
    ax.plot(rows["step"], rows["student_effective_number"], "o-", color="C2", markersize=3, label="student")
    ax.plot(rows["step"], rows["teacher_effective_number"], **_TEACHER, label="teacher")
    ax.set_ylabel("effective no. of\ncomponents")


def _panel_accuracy(ax, rows: pd.DataFrame) -> None:  # noqa: ANN001
    ax.plot(rows["step"], rows["student_accuracy"], "o-", color="C1", markersize=3, label="student")
    ax.plot(rows["step"], rows["teacher_accuracy"], **_TEACHER, label="teacher")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("training step")


def trajectory_figure(table: pd.DataFrame) -> Figure | None:
    """Rows: alignment, effective number of components, accuracy; columns: tasks; x shared."""
    tasks = list(dict.fromkeys(table["task"]))
    if not tasks:
        return None
    fig = new_figure(2.6 * len(tasks) + 0.6, 5.6)
    axes = fig.subplots(3, len(tasks), sharex=True, squeeze=False)
    for col, task in enumerate(tasks):
        rows = table[table["task"] == task].sort_values("step")
        for ax, draw in zip(axes[:, col], (_panel_alignment, _panel_concentration, _panel_accuracy)):
            draw(ax, rows)
            if col:
                ax.set_ylabel("")
        axes[0, col].set_title(task)
    for ax in axes[:, 0]:
        ax.legend(fontsize=7, frameon=False)
    return fig


def _table_html(table: pd.DataFrame) -> str:
    cols = ["step", "task", "alignment", "alignment_lo", "alignment_hi", "null", "verdict",
            "teacher_effective_number", "student_effective_number", "student_accuracy", "circuit_overlap"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, row in table[cols].iterrows():
        cells = "".join(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                        for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_trajectory_report(table: pd.DataFrame, out: Path, title: str) -> Path:
    """Write ``OUT/trajectory.html`` (figure inline, also in ``OUT/figures``) and return its path."""
    fig: RenderedFigure | None = render_figure(lambda: trajectory_figure(table), out, "trajectory",
                                               "Alignment, concentration and accuracy against training step")
    figure = f"<figure>{fig.svg}<figcaption>{html.escape(fig.caption)}</figcaption></figure>" if fig else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".fig-svg{width:100%;height:auto}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Teacher compared with every checkpoint of the run through the ordinary "
        "comparison (one results folder per checkpoint under <code>steps/</code>). Alignment: influence-weighted "
        "similarity of matched components with its 95% bootstrap interval over prompts; chance: the same score for "
        "random students. Dashed lines: the teacher.</p>"
        f"{figure}{_table_html(table)}</body></html>"
    )
    path = out / TRAJECTORY_HTML
    atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path
