"""The main job: load -> run each task on both models -> analyse the pair -> write results.

Everything that can fail on bad input (loading, task files, tokenisation) is checked
for both models and every task before any expensive computation starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from circuitdiff.analysis.circuits import SWEEP_THRESHOLDS
from circuitdiff.analysis.pair import PairAnalysis, analyse_runs
from circuitdiff.errors import TaskFileError
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.methods import Method
from circuitdiff.interventions.sweep import DEFAULT_MEMORY_BUDGET
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.pipeline import ModelTaskRun, run_model_on_task
from circuitdiff.results import (
    COMPONENTS_TABLE,
    PER_PROMPT_TABLE,
    RESULTS_JSON,
    SIMILARITY_TABLE,
    components_frame,
    write_json,
    write_table,
)
from circuitdiff.tasks import EncodedTask, Task, encode_task, get_task

Progress = Callable[[str, float], Callable[[float], None]]
"""Start a progress bar (description, total) and get its ``advance`` function."""


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of a comparison; all of them are written into results.json."""

    ablation: Ablation = Ablation.MEAN
    n_prompts: int = 64
    seed: int = 0
    first_token: bool = False
    method: Method = Method.EXACT
    exact_top: int = 20
    n_boot: int = 1000
    circuits: bool = True
    circuit_thresholds: tuple[float, ...] = SWEEP_THRESHOLDS
    null_model: bool = True
    memory_budget: int = DEFAULT_MEMORY_BUDGET


@dataclass
class PreparedTask:
    """One task as each model sees it (masked models get the masked variant)."""

    name: str
    teacher: tuple[Task, EncodedTask]
    student: tuple[Task, EncodedTask]


@dataclass
class Comparison:
    """Everything a comparison computed, before serialisation."""

    teacher: LoadedModel
    student: LoadedModel
    options: CompareOptions
    runs: dict[str, tuple[ModelTaskRun, ModelTaskRun]] = field(default_factory=dict)
    analyses: dict[str, PairAnalysis] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def task_for_model(name: str, lm: LoadedModel, options: CompareOptions) -> Task:
    task = get_task(name, n_prompts=options.n_prompts, seed=options.seed, masked=lm.adapter.masked_lm)
    if task.masked != lm.adapter.masked_lm:
        kind = "masked" if task.masked else "causal"
        raise TaskFileError(f"task '{name}' is {kind} but model '{lm.name}' is not a {kind} LM")
    return task


def prepare_tasks(teacher: LoadedModel, student: LoadedModel, names: Sequence[str], options: CompareOptions) -> list[PreparedTask]:
    """Build and tokenise every task for both models; fails before any forward pass."""
    prepared = []
    for name in names:
        sides = []
        for lm in (teacher, student):
            task = task_for_model(name, lm, options)
            sides.append((task, encode_task(task, lm.tokenizer, first_token=options.first_token)))
        if len(sides[0][0]) != len(sides[1][0]):
            raise TaskFileError(f"task '{name}' gives the two models different prompt counts")
        prepared.append(PreparedTask(name, sides[0], sides[1]))
    return prepared


def run_comparison(
    teacher: LoadedModel,
    student: LoadedModel,
    tasks: Sequence[str],
    options: CompareOptions = CompareOptions(),
    progress: Progress | None = None,
) -> Comparison:
    prepared = prepare_tasks(teacher, student, tasks, options)
    result = Comparison(teacher, student, options)
    null_student = random_like(student, options.seed) if options.null_model else None
    thresholds = options.circuit_thresholds if options.circuits else ()
    for item in prepared:
        def run(role: str, lm: LoadedModel, side: tuple[Task, EncodedTask], circuits: Sequence[float]) -> ModelTaskRun:
            task, enc = side
            advance = progress(f"{item.name}: {role}", len(lm.adapter.components())) if progress else None
            return run_model_on_task(lm, task, options.ablation, seed=options.seed, method=options.method,
                                     exact_top=options.exact_top, circuit_thresholds=circuits,
                                     memory_budget=options.memory_budget, progress=advance, encoded=enc)

        t_run = run("teacher", teacher, item.teacher, thresholds)
        s_run = run("student", student, item.student, thresholds)
        null_run = run("null student", null_student, item.student, ()) if null_student is not None else None
        same_tokens = same_tokenisation(item.teacher[1], item.student[1])
        result.runs[item.name] = (t_run, s_run)
        analysis = analyse_runs(t_run, s_run, same_tokens=same_tokens, null_run=null_run, n_boot=options.n_boot,
                                seed=options.seed)
        result.analyses[item.name] = analysis
        result.warnings.extend(analysis.warnings)
    return result


def same_tokenisation(a: EncodedTask, b: EncodedTask) -> bool:
    return a.input_ids.shape == b.input_ids.shape and bool(torch.equal(a.input_ids, b.input_ids))


def random_like(lm: LoadedModel, seed: int) -> LoadedModel:
    """A freshly initialised model of ``lm``'s architecture: the chance baseline for alignment."""
    torch.manual_seed(seed)
    model = type(lm.model)(lm.model.config).to(lm.device).eval()
    model.requires_grad_(False)
    return LoadedModel(f"random-init {lm.name}", model, lm.tokenizer, type(lm.adapter)(model))


def compare(
    teacher: str | LoadedModel,
    student: str | LoadedModel,
    tasks: Sequence[str] = ("ioi",),
    options: CompareOptions = CompareOptions(),
    out: str | Path | None = None,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare a teacher with its student on ``tasks``; returns the results dict (and writes it to ``out``)."""
    load = lambda spec: spec if isinstance(spec, LoadedModel) else load_model(  # noqa: E731
        spec, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=device
    )
    comparison = run_comparison(load(teacher), load(student), tasks, options, progress)
    results = results_dict(comparison)
    if out is not None:
        write_outputs(comparison, results, Path(out))
    return results


def _model_task_summary(run: ModelTaskRun) -> dict[str, Any]:
    return {
        "clean_metric": float(run.clean.mean()),
        "base_metric": float(run.base.mean()),
        "accuracy": run.accuracy,
        "answer_prob": float(run.answer_prob.mean()),
        "seq_len": run.seq_len,
        "components": [asdict(e) for e in run.effects],
    }


def results_dict(comparison: Comparison) -> dict[str, Any]:
    from circuitdiff import __version__

    options = asdict(comparison.options)
    options["ablation"] = comparison.options.ablation.value
    options["method"] = comparison.options.method.value
    tasks: dict[str, Any] = {}
    for name, (t_run, s_run) in comparison.runs.items():
        tasks[name] = {
            "n_prompts": t_run.n_prompts,
            "ablation": t_run.ablation,
            "teacher": _model_task_summary(t_run),
            "student": _model_task_summary(s_run),
            **comparison.analyses[name].to_json(),
        }
    return {
        "circuitdiff_version": __version__,
        "options": options,
        "teacher": asdict(comparison.teacher.info),
        "student": asdict(comparison.student.info),
        "tasks": tasks,
        "warnings": comparison.warnings,
    }


def per_prompt_frame(comparison: Comparison) -> pd.DataFrame:
    frames = []
    for task, runs in comparison.runs.items():
        for role, run in zip(("teacher", "student"), runs):
            effects = run.per_prompt_effects
            frame = pd.DataFrame(effects, index=[c.name for c in run.components])
            frame = frame.rename_axis("component").reset_index().melt(id_vars="component", var_name="prompt", value_name="effect")
            frame.insert(0, "task", task)
            frame.insert(0, "model", role)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_outputs(comparison: Comparison, results: dict[str, Any], out: Path) -> None:
    """results.json, the Parquet tables and the report, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / COMPONENTS_TABLE, components_frame(results))
    write_table(out / PER_PROMPT_TABLE, per_prompt_frame(comparison))
    sims = [a.similarity_long(task) for task, a in comparison.analyses.items()]
    write_table(out / SIMILARITY_TABLE, pd.concat(sims, ignore_index=True))
    write_json(out / RESULTS_JSON, results)
