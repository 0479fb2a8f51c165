"""``write_report``: typed results (``circuitdiff.schema``) + Parquet tables -> one self-contained
``report.html`` and SVG figures.

Only plain data is read (never a model), so a report can be rebuilt from a results
folder at any time. Missing parts are shown as "not available" with the run's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from circuitdiff.analysis.influence import MIN_CLEAN_METRIC, PATCHING
from circuitdiff.report import edge_figures, figures, representation_figures
from circuitdiff.report.data import (
    Tables,
    components,
    concentration_stat,
    finite,
    fmt,
    null_reason,
    reason,
    similarity_label,
    slug,
    task_notes,
)
from circuitdiff.report.features import feature_section
from circuitdiff.report.svg import RenderedFigure, render_figure
from circuitdiff.report.text import (
    GLOSSARY,
    agreement_rows,
    Verdict,
    alignment_sentences,
    concentration_verdict,
    withheld_reason,
    overall_finding,
)
from circuitdiff.results import RESULTS_JSON, SIMILARITY_TABLE, atomic_write, load_results
from circuitdiff.schema import Alignment, ControlResult, Results, TaskResult, metric_name, note_lines

REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

_STATS = [
    ("effective_number", "effective number of components", ".1f"),
    ("gini", "Gini of reliance", ".2f"),
    ("top_1_share", "top-1 share", ".2f"),
    ("top_5_share", "top-5 share", ".2f"),
    ("n_for_0.8", "components for 80%", ".0f"),
    ("n_for_0.9", "components for 90%", ".0f"),
    ("worst_drop", "worst single drop (% of {basis})", ".0f"),
    ("mean_drop", "mean drop (% of {basis})", ".1f"),
    ("severity_tail", "severity tail", ".2f"),
]
_HEAD_STATS = [
    ("gini", "Gini of reliance, heads only", ".2f"),
    ("worst_drop", "worst single drop, heads only (% of {basis})", ".0f"),
    ("mean_drop", "mean drop, heads only (% of {basis})", ".1f"),
    ("median_drop", "median drop, heads only (% of {basis})", ".1f"),
    ("worst5_mean_drop", "worst-5% mean drop, heads only (% of {basis})", ".1f"),
    ("severity_tail", "severity tail, heads only", ".2f"),
]


def _basis(task: TaskResult) -> str:
    """What drops are percentages of: the clean metric, or the clean - corrupted gap under patching."""
    return "gap" if task.ablation in PATCHING else "clean"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("circuitdiff.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


FIGURE_KINDS = ("influence_heads", "influence_mlp", "concentration", "layer_cka", "matching", "circuits", "circuit_curve",
                "edge_circuits")


class _Figures:
    """Renders the figures of one report and remembers which files it wrote."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: set[str] = set()

    def add(self, build: Callable[[], Figure | None], key: str, caption: str, missing: str) -> dict[str, Any]:
        fig: RenderedFigure | None = render_figure(build, self.out, key, caption)
        if fig is None:
            return {"figure": None, "missing": missing, "caption": caption}
        self.written.add(Path(fig.file).name)
        return {"figure": fig, "missing": None, "caption": caption}

    def remove_stale(self) -> None:
        """Delete report figures left by an earlier render that this one did not draw (e.g. a circuit now gone)."""
        for path in (self.out / FIGURES_DIR).glob("*.svg"):
            if path.name not in self.written and path.stem.endswith(FIGURE_KINDS):
                path.unlink(missing_ok=True)


def _numbers(task: TaskResult) -> list[dict[str, str]]:
    """Teacher-vs-student rows of the key-numbers table."""
    t, s = task.teacher, task.student
    rows = [
        {"label": f"clean {metric_name(task.multi_token)}", "teacher": fmt(t.clean_metric, ".3f"),
         "student": fmt(s.clean_metric, ".3f")},
        {"label": "accuracy", "teacher": fmt(t.accuracy, ".0%"), "student": fmt(s.accuracy, ".0%")},
        {"label": "components", "teacher": str(len(t.components)), "student": str(len(s.components))},
    ]
    basis = _basis(task)
    heads = _HEAD_STATS if task.concentration_heads else []  # older results have no heads-only statistics
    for stats, concentration in ((_STATS, task.concentration), (heads, task.concentration_heads)):
        for key, label, spec in stats:
            cells = {role: concentration_stat(concentration, role, key) for role in ("teacher", "student")}
            rows.append({"label": label.format(basis=basis),
                         **{role: (stat.text(spec) if stat else "n/a") for role, stat in cells.items()}})
    circuit = task.circuit
    if "teacher" in circuit:
        rows.append({"label": f"circuit size (threshold {fmt(circuit.get('threshold'))})",
                     "teacher": str(len(circuit["teacher"])), "student": str(len(circuit["student"]))})
    rows += [{"label": label, "teacher": teacher, "student": student}
             for label, teacher, student in agreement_rows(t, s)]
    return rows


def _drops_note(task: TaskResult) -> str | None:
    missing = [role for role in ("teacher", "student")
               if concentration_stat(task.concentration, role, "worst_drop") is None]
    if not missing:
        return None
    values = ", ".join(f"{role} {fmt(task.model(role).clean_metric, '.3f')}" for role in missing)
    if _basis(task) == "gap":
        return ("n/a: drops in percent of the clean − corrupted gap are reported only when the gap is clearly "
                f"positive: at least {MIN_CLEAN_METRIC:g} and two standard errors (see the notes).")
    return (f"n/a: drops in percent of the clean metric are reported only when the clean {metric_name(task.multi_token)} is "
            f"clearly positive: at least {MIN_CLEAN_METRIC:g} and two standard errors (clean: {values}).")


def _alignment_rows(results: Results, name: str) -> list[dict[str, str]]:
    al = results.tasks[name].alignment
    paper = finite(al.paper)
    lo, hi = (finite(al.ci[0]), finite(al.ci[1])) if len(al.ci) == 2 else (None, None)
    interval = (f"{fmt(lo, '.3f')}–{fmt(hi, '.3f')} ({fmt(al.level, '.0%')} CI)"
                if lo is not None and hi is not None else "no interval")
    return [
        {"label": f"alignment score ({al.measure})", "value": fmt(al.score, ".3f"), "note": interval},
        {"label": f"null (median of {al.n_null} random students; q95 {fmt(al.null_q95, '.3f')})",
         "value": fmt(al.null, ".3f"),
         "note": "" if finite(al.null) is not None else f"not available: {null_reason(results, name)}"},
        {"label": "paper A (reference study)", "value": fmt(paper, ".3f"),
         "note": "" if paper is not None else "not available: " + reason(results, name, "paper", default="not computed")},
    ] + _control_rows(results.tasks[name].control)


def _control_rows(control: ControlResult | None) -> list[dict[str, str]]:
    """The teacher against the control model (``--control``), scored as the pair is: the floor to read the pair by."""
    if control is None:
        return []
    al = control.alignment
    lo, hi = (finite(al.ci[0]), finite(al.ci[1])) if len(al.ci) == 2 else (None, None)
    interval = (f"{fmt(lo, '.3f')}–{fmt(hi, '.3f')} ({fmt(al.level, '.0%')} CI)"
                if lo is not None and hi is not None else "no interval")
    null = (f"null {fmt(al.null, '.3f')} (q95 {fmt(al.null_q95, '.3f')}, {al.n_null} random models)"
            if al.n_null else "no null")
    return [
        {"label": f"control: alignment score, teacher vs {control.model} ({al.measure})", "value": fmt(al.score, ".3f"),
         "note": f"{interval}; {null}"},
        {"label": f"control: paper A, teacher vs {control.model}", "value": fmt(finite(al.paper), ".3f"),
         "note": "" if finite(al.paper) is not None else "not available (see the notes)"},
    ]


def _top_components(frame: pd.DataFrame, k: int = 8, column: str = "percent_of_clean") -> list[dict[str, str]]:
    """The k largest shares; ``column``: percent of clean (ablation) or of the gap (patching)."""
    if frame.empty:
        return []
    top = frame.sort_values("share", ascending=False).head(k)
    def effect(r: pd.Series) -> str:
        lo, hi = finite(r.get("effect_lo")), finite(r.get("effect_hi"))
        interval = f" ({fmt(lo, '+.3f')} to {fmt(hi, '+.3f')})" if lo is not None and hi is not None else ""
        return fmt(r["effect"], "+.3f") + interval

    return [{"name": r["name"], "share": fmt(r["share"], ".1%"), "effect": effect(r),
             "percent": fmt(r.get(column), "+.0f") + ("%" if finite(r.get(column)) is not None else "")}
            for _, r in top.iterrows()]


def _circuit(results: Results, name: str) -> dict[str, Any]:
    circuit = results.tasks[name].circuit
    entries = circuit.get("thresholds") or []
    if not entries:
        if not results.options.get("circuits", True):
            return {"rows": [], "missing": "circuit discovery was switched off for this run"}
        why = [n.text for n in task_notes(results, name) if n.topic == "circuit" and n.role is not None]
        return {"rows": [], "missing": "; ".join(why) or "no circuit was found"}
    compared = any(e.get("overlap_jaccard") is not None for e in entries)
    rows = [{"threshold": fmt(e["threshold"]), "teacher": _circuit_cell(e.get("teacher")),
             "student": _circuit_cell(e.get("student")),
             "jaccard": fmt(e.get("overlap_jaccard")) if compared else "withheld",
             "recall": fmt(e.get("teacher_recall"), ".0%") if compared else "withheld",
             "across": {role: _threshold_overlap_cell(e, role) for role in ("teacher", "student")},
             "default": finite(e["threshold"]) == finite(circuit.get("threshold"))} for e in entries]
    nested = circuit.get("nested") or {}
    return {"rows": rows, "missing": None, "withheld": circuit.get("comparison_withheld"),
            "not_nested": [role for role, flag in nested.items() if flag is False]}


def _circuit_cell(c: dict[str, Any] | None) -> str:
    """Size, faithfulness (own ablation; under the other one) and Wang et al.'s incompleteness gap."""
    if not c:
        return "none"
    other = f", {c['other_ablation']} {fmt(c.get('faithfulness_other'))}" if c.get("other_ablation") else ""
    return (f"{c['size']} (faithful {fmt(c.get('faithfulness'))}{other}; "
            f"incompleteness {fmt(c.get('completeness_gap'))})")


def _threshold_overlap_cell(entry: dict[str, Any], role: str) -> str:
    """'T=0.1: 0.39, T=0.3: 0.50': this circuit's Jaccard overlap with the model's circuit at each other threshold."""
    overlaps = (entry.get("overlap_with_thresholds") or {}).get(role) or []
    return ", ".join(f"T={fmt(o['threshold'], 'g')}: {fmt(o['jaccard'])}" for o in overlaps) or "—"


def _per_prompt(tables: Tables, name: str, frames: dict[str, pd.DataFrame]) -> dict[str, np.ndarray | None]:
    """components x prompts effects in the order of the results' component lists, when the table has them."""
    out: dict[str, np.ndarray | None] = {}
    for role, frame in frames.items():
        pp = tables.effects(name, role)
        same = pp is not None and set(pp.index) == set(frame["name"])
        out[role] = pp.reindex(frame["name"]).to_numpy(dtype=float) if same else None
    return out


def _task_figures(results: Results, name: str, key: str, tables: Tables, figs: _Figures,
                  frames: dict[str, pd.DataFrame], circuit_missing: str | None) -> dict[str, dict[str, Any]]:
    task = results.tasks[name]
    raw = task.to_json()  # the edge figures read their own plain dicts
    t, s = frames["teacher"], frames["student"]
    seed = int(results.options.get("seed", 0) or 0)
    shares = {r: f["share"].to_numpy(dtype=float) for r, f in frames.items()}
    effective = {r: (st.point if (st := concentration_stat(task.concentration, r, "effective_number")) else None)
                 for r in frames}
    per_prompt = _per_prompt(tables, name, frames)
    layer = tables.matrix(name, "layer_cka")
    circuit = task.circuit
    no_layer_cka = tables.missing.get(SIMILARITY_TABLE, "the similarity table has no layer_cka rows for this task")
    out = {
        "heads": figs.add(lambda: figures.influence_heads(t, s), f"{key}_influence_heads",
                          "Influence of every attention head, teacher and student on one colour scale.",
                          "no attention heads in the results"),
        "mlp": figs.add(lambda: figures.influence_mlp(t, s), f"{key}_influence_mlp",
                        "Influence of each MLP layer (same scale for both models).", "no MLPs in the results"),
        "concentration": figs.add(
            lambda: figures.concentration_curves(shares, per_prompt, effective, seed), f"{key}_concentration",
            "Concentration curves: cumulative share of reliance as components are added, most influential first "
            "(shaded: 95% bootstrap band over prompts; dotted: effective number).", "no influence shares in the results"),
        "layer_cka": figs.add(lambda: figures.layer_cka(layer), f"{key}_layer_cka",
                              "Layer-by-layer CKA of the residual streams.", no_layer_cka),
        "matching": figs.add(
            lambda: figures.matching_diagram(t, s, raw["matching"], raw["transport"]),
            f"{key}_matching", "The largest flows of the teacher's reliance under the optimal transport behind the "
            "alignment score (band width: mass), between labelled components with their share of reliance; each "
            "student component names its one-to-one teacher match and that pair's CKA.", "no transport plan in the results"),
        "attention_roles": figs.add(
            lambda: representation_figures.attention_roles(raw["attention_roles"]), f"{key}_attention_roles",
            "Where the most influential heads (share of influence in brackets) and their matched heads (~) attend "
            "from the read position, by token role, averaged over templates (per-template values with 95% "
            "intervals in results.json).", "no attention records (needs eager attention)"),
        "mlp_compare": figs.add(
            lambda: representation_figures.mlp_comparison(raw["mlp_representation"], raw["mlp_sparsity"]),
            f"{key}_mlp_compare", "MLP representations: held-out SVCCA and PWCCA (fitted on half the prompts, "
            "scored on the other) and token-wise cosine of matched MLPs; Hoyer sparsity of each MLP's hidden units.",
            "no MLP records in the results"),
        "circuits": {"figure": None, "missing": circuit_missing, "caption": ""},
        "circuit_curve": {"figure": None, "missing": circuit_missing, "caption": ""},
        "edges": figs.add(lambda: edge_figures.edge_circuit_graphs(raw), f"{key}_edge_circuits", edge_figures.CAPTION,
                          edge_figures.edge_missing_reason(results.options, raw)),
    }
    if circuit_missing is None:
        out["circuits"] = figs.add(
            lambda: figures.circuits(t, s, circuit.get("teacher") or [], circuit.get("student") or [], _default_mapped(circuit)),
            f"{key}_circuits", f"Circuits at threshold {fmt(circuit.get('threshold'))}: filled cells are kept components.",
            "no components in the results")
        found = {role: [e[role] for e in circuit.get("thresholds") or [] if e.get(role)]
                 for role in ("teacher", "student")}
        out["circuit_curve"] = figs.add(
            lambda: figures.circuit_curves(circuit.get("curve") or {}, found), f"{key}_circuit_curve",
            "Metric kept against circuit size: the most influential components kept, every other one ablated at once "
            "(each point an exact run; left end: everything ablated, right end: the clean model). Diamonds: the "
            "pruned circuits.", "no metric curve in the results (an older results.json)")
    return out


def _summary_row(task: TaskResult, verdict: Verdict, sizes: dict[str, int]) -> dict[str, str]:
    """One line of the summary table; ``sizes``: each model's number of components."""
    al = task.alignment
    ci = list(al.ci) + [None, None]
    has_ci = finite(ci[0]) is not None and finite(ci[1]) is not None
    eff = {role: concentration_stat(task.concentration, role, "effective_number") for role in ("teacher", "student")}
    ctl = task.control.alignment if task.control is not None else None  # --control: its value beside the pair's

    def beside(value: float | None) -> str:
        return "" if ctl is None else f" (control {fmt(value, '.3f')})"

    return {"alignment": fmt(al.score, ".3f") + (f" ({fmt(ci[0])}–{fmt(ci[1])})" if has_ci else "")
            + beside(ctl.score if ctl else None),
            "null": fmt(al.null, ".3f"), "paper": fmt(al.paper, ".3f") + beside(ctl.paper if ctl else None),
            "chance": "no finding (not solved)" if withheld_reason(task.finding) else _versus_chance(al),
            "verdict": _VERDICT_LABEL[verdict.direction],
            "relative": " / ".join(f"{stat.point / sizes[role]:.0%}" if stat and stat.point and sizes[role] else "n/a"
                                   for role, stat in eff.items()),
            **{role: (stat.text(".1f") if stat else "n/a") for role, stat in eff.items()}}


def _task_context(results: Results, name: str, key: str, tables: Tables, figs: _Figures) -> dict[str, Any]:
    task = results.tasks[name]
    frames = {role: components(task.model(role)) for role in ("teacher", "student")}
    verdict = concentration_verdict(task.concentration, task.finding, len(frames["teacher"]), len(frames["student"]))
    circuit = _circuit(results, name)
    measure = task.alignment.measure
    sim = tables.matrix(name, measure)
    transport = sorted(task.transport, key=lambda f: -(f.mass or 0))[:10]
    return {
        "name": name, "key": key, "n_prompts": task.n_prompts, "ablation": task.ablation,
        "summary": _summary_row(task, verdict, {role: len(frame) for role, frame in frames.items()}), "verdict": verdict,
        "alignment_text": alignment_sentences(results, name), "alignment_rows": _alignment_rows(results, name),
        "numbers": _numbers(task), "drops_note": _drops_note(task), "circuit": circuit,
        "fig": _task_figures(results, name, key, tables, figs, frames, circuit["missing"]),
        "top": {role: _top_components(frame, column=f"percent_of_{_basis(task)}") for role, frame in frames.items()},
        "percent_label": f"% of {_basis(task)}",
        "preserved": [{**p.to_json(), "share": fmt(p.share, ".1%"), "similarity": fmt(p.similarity)}
                      for p in task.preserved],
        "flows": [{"teacher": f.teacher, "student": f.student, "mass": fmt(f.mass, ".1%"),
                   "similarity": _cell(sim, f.teacher, f.student)} for f in transport],
        "notes": [n.line for n in task_notes(results, name)],
        "example": task.example.to_json() if task.example else None,
        "edge_changes": edge_figures.edge_change_rows(task.to_json()),
        "similarity_label": similarity_label(measure),
    }


_VERDICT_LABEL = {"fewer": "fewer components", "more": "more components", "no clear difference": "no clear difference",
                  "withheld": "no finding (not solved)", "not available": "not available"}


def _versus_chance(al: Alignment) -> str:
    """The verdict against the random students (``above_chance``: lower bound above their 95% quantile)."""
    verdict = al.above_chance
    return "n/a" if verdict is None else ("above" if verdict else "not above")


def _default_mapped(circuit: dict[str, Any]) -> list[str]:
    for entry in circuit.get("thresholds") or []:
        if finite(entry.get("threshold")) == finite(circuit.get("threshold")):
            return list(entry.get("student_mapped_to_teacher") or [])
    return []


def _cell(frame: pd.DataFrame | None, row: str, col: str) -> str:
    """Similarity of a transported pair; across kinds the score counts it as 0."""
    if str(row).endswith(".MLP") != str(col).endswith(".MLP"):
        return "0 (head↔MLP)"
    if frame is None or row not in frame.index or col not in frame.columns:
        return "—"
    return fmt(frame.loc[row, col])


def human_bytes(n: int | float) -> str:
    """1073741824 -> '1 GiB' (binary units, as the default budget is defined)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def _option_rows(options: dict[str, Any]) -> dict[str, str]:
    """Run options as a reader wants them: sizes in GiB, lists without brackets."""
    shown: dict[str, str] = {}
    for key, value in options.items():
        if key == "memory_budget" and isinstance(value, (int, float)) and not isinstance(value, bool):
            shown[key] = "automatic" if value <= 0 else f"{human_bytes(value)} per forward pass"
        elif isinstance(value, (list, tuple)):
            shown[key] = ", ".join(str(v) for v in value) or "none"
        else:
            shown[key] = str(value)
    return shown


def _prompt_counts(tasks: list[dict[str, Any]]) -> str:
    """The header's prompt count, from the tasks themselves (a file task has its own count)."""
    counts = {t["name"]: t["n_prompts"] for t in tasks if t.get("n_prompts") is not None}
    if not counts:
        return "no tasks"
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{n} prompts" + (" per task" if len(counts) > 1 else "")
    return "prompts: " + ", ".join(f"{name} {n}" for name, n in counts.items())


def _model_rows(results: Results) -> list[dict[str, str]]:
    fields = [("name", "name"), ("architecture", "architecture"), ("n_layers", "layers"), ("n_heads", "heads per layer"),
              ("d_model", "width (d_model)"), ("n_parameters", "parameters")]
    t, s = results.teacher, results.student

    def cell(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else ("—" if v is None else str(v))
    return [{"label": label, "teacher": cell(getattr(t, k)), "student": cell(getattr(s, k))} for k, label in fields]


def write_report(results: Results | dict[str, Any], out: Path) -> Path:
    """Write ``out/report.html`` and ``out/figures/*.svg`` from the results and the tables in ``out``.

    A results dict is read through the schema first (``Results.read``: version check, upgrade of older files).
    """
    results = Results.read(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = Tables.read(out)
    figs = _Figures(out)
    keys: dict[str, str] = {}
    for name in results.tasks:
        key = slug(name)
        while key in keys.values():
            key += "-x"
        keys[name] = key
    tasks = [_task_context(results, name, key, tables, figs) for name, key in keys.items()]
    figs.remove_stale()
    verdicts = {t["name"]: t["verdict"] for t in tasks}
    options = results.options
    names = {role: results.model(role).name for role in Results.ROLES}
    html = _environment().get_template("report.html.j2").render(
        names=names, tasks=tasks, overall=overall_finding(verdicts), glossary=GLOSSARY,
        models=_model_rows(results), options=_option_rows(options), prompt_counts=_prompt_counts(tasks),
        warnings=note_lines(results.notes),
        missing_tables=tables.missing, version=results.circuitdiff_version,
        features_html=Markup(feature_section(out)),  # compare --features: features.json next to results.json
    )
    path = out / REPORT_HTML
    atomic_write(path, lambda p: p.write_text(html, encoding="utf-8"))
    return path


def render_from_folder(out: Path) -> Path:
    """Rebuild the report of a finished run from ``out/results.json`` (``circuitdiff report OUT``)."""
    out = Path(out)
    if not (out / RESULTS_JSON).is_file():
        from circuitdiff.errors import CircuitDiffError

        raise CircuitDiffError(f"{out / RESULTS_JSON} not found: is {out} the --out folder of a compare run?")
    return write_report(load_results(out), out)
