"""The control pair (``--control MODEL``): the teacher against an unrelated model, beside the pair.

The reference study's table has a control row, GPT-2 against DistilBERT: a pair with no
distillation between them, whose alignment is the floor a real teacher/student pair should
clear. ``compare`` with a control runs the control model on every task (its masked variant
if it is a masked LM), compares the teacher with it exactly as with the student (same
similarity measure, interval and chance level, and the study's A, aligned across
tokenisations), and writes the result under ``tasks.<task>.control``. Circuits and edges are
not computed for the control: only its alignment is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from circuitdiff.analysis.pair import analyse_runs
from circuitdiff.analysis.runs import ModelTaskRun
from circuitdiff.models.loading import LoadedModel
from circuitdiff.null import null_draws
from circuitdiff.options import CompareOptions
from circuitdiff.pipeline import run_model_on_task
from circuitdiff.progress import Progress
from circuitdiff.resources import with_less_memory
from circuitdiff.schema import Note
from circuitdiff.tasks.prepared import PreparedTask

CONTROL_TOPICS = ("paper", "null", "interval", "metric", "finding")
"""Notes of the control pair worth passing on (the teacher's own notes are already in the pair's)."""


@dataclass
class ControlTask:
    """The teacher against the control on one task: what ``results.json`` shows beside the pair."""

    entry: dict[str, Any]
    notes: list[Note] = field(default_factory=list)


def _run(lm: LoadedModel, side: PreparedTask, role: str, options: CompareOptions, budget: int,
         progress: Progress | None) -> ModelTaskRun:
    task, enc = side.teacher if role == "teacher" else side.student
    advance = progress(f"{side.name}: control ({role})", len(lm.adapter.components())) if progress else None
    return run_model_on_task(lm, task, options.ablation, seed=options.seed, method=options.method,
                             exact_top=options.exact_top, memory_budget=budget, progress=advance, encoded=enc,
                             n_boot=options.n_boot)


def run_control_task(teacher: LoadedModel, control: LoadedModel, item: PreparedTask, options: CompareOptions, *,
                     same_tokens: bool, teacher_run: ModelTaskRun | None = None,
                     progress: Progress | None = None) -> ControlTask:
    """Compare the teacher with the control on one task (``item``: the task as teacher and control see it).

    ``teacher_run``: the pair's teacher run, reused when the teacher sees the same prompts in both
    pairs (tasks such as ``facts`` drop items either model's tokenizer splits, so it may not);
    ``same_tokens``: whether teacher and control tokenise the prompts identically.
    """
    t_run = teacher_run if teacher_run is not None else with_less_memory(
        lambda budget: _run(teacher, item, "teacher", options, budget, progress), options.memory_budget,
        f"task '{item.name}' (teacher, control pair)")
    c_run = with_less_memory(lambda budget: _run(control, item, "student", options, budget, progress),
                             options.memory_budget, f"task '{item.name}' (control)")
    n_null = options.n_null if options.null_model else 0
    nulls = with_less_memory(lambda budget: null_draws(control, [item.student[1]], options.ablation, seed=options.seed,
                                                       n_null=n_null, memory_budget=budget)[0],
                             options.memory_budget, "the control's random models") if n_null else []
    analysis = analyse_runs(t_run, c_run, same_tokens=same_tokens,
                            null_draws=nulls, n_boot=options.n_boot, seed=options.seed, measure=options.measure)
    entry = {"model": control.name, "n_prompts": c_run.n_prompts, "clean_metric": float(c_run.clean.mean()),
             "accuracy": c_run.accuracy, "alignment": analysis.alignment, "finding": analysis.finding}
    own = set(t_run.notes)
    notes = [Note(task=n.task, model=control.name, topic="control", code=f"control.{n.code}",
                  text=f"control pair: {n.text}")
             for n in analysis.notes if n.topic in CONTROL_TOPICS and n not in own]
    return ControlTask(entry, list(dict.fromkeys(notes)))
