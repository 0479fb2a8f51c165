"""A comparison as plain data: what ``run_comparison`` computed, and how it becomes the outputs.

``results.json`` (checked against the schema), the Parquet tables and the per-task records a
checkpoint keeps are all built here from a ``Comparison``, so computed and restored tasks take
one path to the files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from circuitdiff.analysis.agreement import TOP_K_EDGES, agreement
from circuitdiff.analysis.edges import EDGES_TABLE, compare_edge_circuits, edges_frame
from circuitdiff.analysis.pair import PairAnalysis
from circuitdiff.checkpoint import TaskRecord
from circuitdiff.control import ControlTask
from circuitdiff.interventions.edge_methods import EdgeMethod, EdgeScores
from circuitdiff.models.loading import LoadedModel
from circuitdiff.options import CompareOptions
from circuitdiff.pipeline import ModelTaskRun
from circuitdiff.results import (
    COMPONENTS_TABLE,
    PER_PROMPT_TABLE,
    RESULTS_JSON,
    SIMILARITY_TABLE,
    components_frame,
    write_json,
    write_table,
)
from circuitdiff.schema import SCHEMA_VERSION, Note, Results, json_ready, note_lines


@dataclass
class Comparison:
    """Everything a comparison computed, before serialisation."""

    teacher: LoadedModel
    student: LoadedModel
    options: CompareOptions
    runs: dict[str, tuple[ModelTaskRun, ModelTaskRun]] = field(default_factory=dict)
    analyses: dict[str, PairAnalysis] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    restored: dict[str, TaskRecord] = field(default_factory=dict)
    """Tasks finished by an earlier, interrupted run (see ``circuitdiff.checkpoint``)."""
    records: dict[str, TaskRecord] = field(default_factory=dict)
    """Every task as it goes into the outputs, computed or restored (see ``task_records``)."""
    order: list[str] = field(default_factory=list)
    """Task names in output order, computed and restored ones together."""
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each computed task's first prompt, as the report shows it."""
    control: LoadedModel | None = None
    """The control model (``options.control``), compared with the teacher beside the student."""
    controls: dict[str, ControlTask] = field(default_factory=dict)
    """Each computed task's control pair (``circuitdiff.control``)."""

    def task_names(self) -> list[str]:
        return self.order or list(self.runs)


def task_record(comparison: Comparison, name: str) -> TaskRecord:
    """One computed task as it will appear in the outputs (what a checkpoint holds)."""
    t_run, s_run = comparison.runs[name]
    analysis = comparison.analyses[name]
    entry = {**_task_entry(t_run, s_run, analysis), "example": comparison.examples.get(name)}
    if name in comparison.controls:
        entry["control"] = comparison.controls[name].entry
    return TaskRecord(name, json_ready(entry), list(analysis.notes),
                      _per_prompt_task_frame(name, (t_run, s_run)), analysis.similarity_long(name))


def _model_task_summary(run: ModelTaskRun) -> dict[str, Any]:
    return {
        "clean_metric": float(run.clean.mean()),
        "base_metric": float(run.base.mean()),
        "accuracy": run.accuracy,
        "answer_prob": float(run.answer_prob.mean()),
        "seq_len": run.seq_len,
        "attribution_spearman": run.attribution_spearman,
        "components": [asdict(e) for e in run.effects],
        **({"edges": _edges_entry(run.edges)} if run.edges is not None else {}),
        **({"attribution_agreement": run.attribution_agreement} if run.attribution_agreement is not None else {}),
    }


def _edges_entry(edges: EdgeScores) -> dict[str, Any]:
    """The edge scores with, for an exact run, each gradient method's agreement with the exact edge effects."""
    entry = edges.to_json()
    if "exact" in edges.effects:
        entry["agreement_vs_exact"] = {name: agreement(edges.effects["exact"], values, TOP_K_EDGES)
                                       for name, values in edges.effects.items() if name != "exact"}
    return entry


def _task_entry(t_run: ModelTaskRun, s_run: ModelTaskRun, analysis: PairAnalysis) -> dict[str, Any]:
    entry = {
        "n_prompts": t_run.n_prompts,
        "ablation": t_run.ablation,
        "teacher": _model_task_summary(t_run),
        "student": _model_task_summary(s_run),
        **analysis.to_json(),
    }
    if t_run.edges is not None and s_run.edges is not None:
        entry["edge_circuits"] = compare_edge_circuits(entry["teacher"]["edges"], entry["student"]["edges"],
                                                       analysis.matching, analysis.many_to_one)
    return entry


def results_dict(comparison: Comparison) -> dict[str, Any]:
    from circuitdiff import __version__

    options = asdict(comparison.options)
    options["ablation"] = comparison.options.ablation.value
    options["method"] = comparison.options.method.value
    tasks = {name: record.entry for name, record in task_records(comparison).items()}
    notes = list(dict.fromkeys(comparison.notes))
    results = Results.from_json(json_ready({
        "schema_version": SCHEMA_VERSION,
        "circuitdiff_version": __version__,
        "options": options,
        "teacher": asdict(comparison.teacher.info),
        "student": asdict(comparison.student.info),
        **({"control": asdict(comparison.control.info)} if comparison.control is not None else {}),
        "tasks": tasks,
        "notes": [n.to_json() for n in notes],
        "warnings": note_lines(notes),
    }))  # checked against the schema before anything is written
    return results.to_json()


def _per_prompt_task_frame(task: str, runs: tuple[ModelTaskRun, ModelTaskRun]) -> pd.DataFrame:
    frames = []
    for role, run in zip(("teacher", "student"), runs):
        effects = run.per_prompt_effects
        frame = pd.DataFrame(effects, index=[c.name for c in run.components])
        frame = frame.rename_axis("component").reset_index().melt(id_vars="component", var_name="prompt", value_name="effect")
        frame.insert(0, "task", task)
        frame.insert(0, "model", role)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def task_records(comparison: Comparison) -> dict[str, TaskRecord]:
    """Every task's outputs in order: computed and restored tasks take this one path to the files."""
    for name in comparison.task_names():
        if name not in comparison.records:  # a Comparison assembled by hand (runs and analyses only)
            comparison.records[name] = comparison.restored.get(name) or task_record(comparison, name)
    return {name: comparison.records[name] for name in comparison.task_names()}


def per_prompt_frame(comparison: Comparison) -> pd.DataFrame:
    return pd.concat([record.per_prompt for record in task_records(comparison).values()], ignore_index=True)


def write_outputs(comparison: Comparison, results: dict[str, Any], out: Path) -> None:
    """results.json and the Parquet tables, each written atomically (``compare`` adds the report)."""
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / COMPONENTS_TABLE, components_frame(results))
    write_table(out / PER_PROMPT_TABLE, per_prompt_frame(comparison))
    sims = [record.similarity for record in task_records(comparison).values()]
    write_table(out / SIMILARITY_TABLE, pd.concat(sims, ignore_index=True))
    if comparison.options.edges != EdgeMethod.NONE.value:
        write_table(out / EDGES_TABLE, edges_frame(results))
    write_json(out / RESULTS_JSON, results)
