"""Terminal output: the end-of-run summary and the task list (rich); bars are in ``circuitdiff.progress``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from circuitdiff.interventions.choices import Ablation
from circuitdiff.schema import Alignment, ControlResult, Results, Stat, TaskResult, metric_name, note_lines



def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _interval(stat: Stat | None, spec: str = ".2f") -> str:
    if stat is None or stat.point is None:
        return "—"
    return f"{_fmt(stat.point, spec)} [{_fmt(stat.lo, spec)}, {_fmt(stat.hi, spec)}]"


def _chance(al: Alignment) -> str:
    """The verdict of ``analysis.calibration.above_chance`` in words."""
    verdict = al.above_chance
    return "chance not available" if verdict is None else ("above chance" if verdict else "NOT above chance")


def print_summary(console: Console, results: Results | dict[str, Any], out: Path) -> None:
    """One table per task: influence, alignment with interval and null, concentration, preserved components."""
    from circuitdiff.report.text import agreement_rows

    results = Results.read(results)
    control = f" (control: [cyan]{results.control.name}[/])" if results.control is not None else ""
    console.print(f"\n[bold]circuitdiff[/]: teacher [cyan]{results.teacher.name}[/] vs student "
                  f"[magenta]{results.student.name}[/]{control}")
    for task, tr in results.tasks.items():
        al = tr.alignment
        lo, hi = al.ci
        console.print(
            f"\n[bold]{task}[/] ({tr.n_prompts} prompts, {tr.ablation} ablation): "
            f"alignment [bold]{_fmt(al.score)}[/] [{_fmt(lo)}, {_fmt(hi)}], null {_fmt(al.null)} "
            f"(q95 {_fmt(al.null_q95)}, {al.n_null} random students): {_chance(al)}, "
            f"paper A {_fmt(al.paper)}"
        )
        if tr.control is not None:
            console.print(_control_line(tr.control), highlight=False)
        console.print(_task_table(tr))
        console.print(_finding_line(tr), highlight=False)
        if tr.preserved:
            best = ", ".join(f"{p.teacher}→{p.student} ({_fmt(p.similarity, '.2f')})" for p in tr.preserved[:3])
            worst = ", ".join(f"{p.teacher}→{p.student} ({_fmt(p.similarity, '.2f')})" for p in tr.preserved[-3:][::-1])
            console.print(f"most preserved: {best}\nleast preserved: {worst}")
        if rows := agreement_rows(tr.teacher, tr.student):
            console.print("checks of the one-pass shortcuts (every number above is exact):")
            for label, teacher, student in rows:
                console.print(f"  {label}: teacher {teacher}, student {student}", highlight=False)
    for line in note_lines(results.notes):
        console.print(f"[yellow]note:[/] {line}", highlight=False)
    tables = ", ".join(sorted(p.name for p in out.glob("*.parquet")))  # what was written: edges.parquet only with --edges
    console.print(f"\nresults: {out / 'results.json'} (tables: {tables})")


def _control_line(c: ControlResult) -> str:
    """The control pair beside the pair: the teacher against an unrelated model, scored the same way."""
    al = c.alignment
    lo, hi = al.ci
    return (f"control (teacher vs [cyan]{c.model}[/]): alignment [bold]{_fmt(al.score)}[/] [{_fmt(lo)}, {_fmt(hi)}], "
            f"null {_fmt(al.null)}: {_chance(al)}, paper A {_fmt(al.paper)}")


def _task_table(tr: TaskResult) -> Table:
    """Both models side by side: metrics, concentration (all components, then heads only), circuit size."""
    table = Table(show_header=True, header_style="bold")
    for col in ("", "teacher", "student"):
        table.add_column(col, justify="right" if col else "left")
    t, s = tr.teacher, tr.student
    table.add_row(f"clean {metric_name(tr.multi_token)}", _fmt(t.clean_metric), _fmt(s.clean_metric))
    table.add_row("accuracy", _fmt(t.accuracy, ".1%"), _fmt(s.accuracy, ".1%"))
    ct, cs = tr.concentration["teacher"], tr.concentration["student"]
    basis = "% of gap" if Ablation(tr.ablation).needs_corrupted else "% of clean"
    for key, label in (("effective_number", "effective # components"), ("gini", "Gini of |effect|"),
                       ("top_1_share", "top-1 share"), ("n_for_0.8", "components for 80%"),
                       ("worst_drop", f"worst single drop ({basis})"), ("mean_drop", f"mean drop ({basis})"),
                       ("severity_tail", "severity tail")):
        table.add_row(label, _interval(ct.get(key)), _interval(cs.get(key)))
    heads = tr.concentration_heads  # empty in older results
    ht, hs = heads.get("teacher") or {}, heads.get("student") or {}
    for key, label in (("gini", "heads only: Gini"), ("worst_drop", f"heads only: worst drop ({basis})"),
                       ("mean_drop", f"heads only: mean drop ({basis})"),
                       ("worst5_mean_drop", f"heads only: worst-5% mean ({basis})"),
                       ("severity_tail", "heads only: severity tail")) if heads else ():
        table.add_row(label, _interval(ht.get(key)), _interval(hs.get(key)))
    circuit = tr.circuit
    default = next((e for e in circuit.get("thresholds") or [] if e["threshold"] == circuit.get("threshold")), None)
    if default is not None:
        table.add_row(f"circuit size (T={circuit['threshold']})",
                      *(str(default[role]["size"]) if default.get(role) else "none" for role in ("teacher", "student")))
    return table


def _finding_line(task: TaskResult) -> str:
    """The concentration headline, or why no finding is claimed for this task."""
    from circuitdiff.report.text import concentration_verdict

    verdict = concentration_verdict(task.concentration, task.finding, len(task.teacher.components), len(task.student.components))
    if verdict.direction == "withheld":
        return f"[bold]finding:[/] {verdict.sentence} (no alignment finding either)"
    return f"[bold]finding:[/] {verdict.sentence}"


def tasks_table() -> Table:
    from circuitdiff.tasks import BUILTIN_TASKS

    table = Table(title="built-in tasks", show_lines=True)
    for col in ("name", "masked", "example prompt", "answer", "distractor", "description"):
        table.add_column(col, overflow="fold")
    for name, spec in BUILTIN_TASKS.items():
        item = spec.generate(1, 0, False).prompts[0]
        table.add_row(name, "yes" if spec.supports_masked else "no", item.prompt, repr(item.answer), repr(item.distractor),
                      spec.description)
    return table
