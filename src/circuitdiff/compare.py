"""The main job: load -> run each task on both models -> analyse the pair -> write results.

Everything that can fail on bad input (loading, task files, tokenisation) is checked
for both models and every task before any expensive computation starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from circuitdiff.analysis.circuits import SWEEP_THRESHOLDS
from circuitdiff.analysis.edges import EDGES_TABLE, compare_edge_circuits, edges_frame
from circuitdiff.analysis.pair import MIN_PROMPTS, PairAnalysis, analyse_runs
from circuitdiff.errors import TaskFileError
from circuitdiff.interventions.ablation import Ablation
from circuitdiff.interventions.edge_methods import EdgeMethod, check_edge_support, parse_edge_method
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
from circuitdiff.sweep.resources import auto_budget, parse_dtype, with_less_memory
from circuitdiff.sweep.resume import TaskRecord, TaskStore, run_fingerprint
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
    edges: str = "none"
    """Edge effects: none | exact | eap | eap-ig (see ``circuitdiff.interventions.edge_methods``)."""


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
    restored: dict[str, TaskRecord] = field(default_factory=dict)
    """Tasks finished by an earlier, interrupted run (see ``circuitdiff.sweep.resume``)."""
    order: list[str] = field(default_factory=list)
    """Task names in output order, computed and restored ones together."""

    def task_names(self) -> list[str]:
        return self.order or list(self.runs)


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
        if len(sides[0][0]) < MIN_PROMPTS:
            raise TaskFileError(f"task '{name}' has {len(sides[0][0])} prompts; circuitdiff needs at least {MIN_PROMPTS}")
        if len(sides[0][0]) != len(sides[1][0]):
            raise TaskFileError(f"task '{name}' gives the two models different prompt counts")
        label = sides[0][0].name  # a file task is keyed by its file name, not its full path
        if any(p.name == label for p in prepared):
            raise TaskFileError(f"two tasks are both named '{label}'; rename one of the files")
        prepared.append(PreparedTask(label, sides[0], sides[1]))
    return prepared


def run_comparison(
    teacher: LoadedModel,
    student: LoadedModel,
    tasks: Sequence[str],
    options: CompareOptions = CompareOptions(),
    progress: Progress | None = None,
    store: TaskStore | None = None,
) -> Comparison:
    """Run every task on both models; with a ``store``, reuse finished tasks and checkpoint each new one."""
    edge_method = parse_edge_method(options.edges)
    for lm in (teacher, student):
        check_edge_support(lm.adapter, edge_method, lm.name)
    prepared = prepare_tasks(teacher, student, tasks, options)
    result = Comparison(teacher, student, options)
    null_student: LoadedModel | None = None
    thresholds = options.circuit_thresholds if options.circuits else ()
    for item in prepared:
        result.order.append(item.name)
        record = store.load(item) if store is not None else None
        if record is not None:
            result.restored[item.name] = record
            result.warnings.extend(record.warnings)
            if progress:
                progress(f"{item.name}: finished earlier, reused", 1)(1)
            continue
        if options.null_model and null_student is None:
            null_student = random_like(student, options.seed)

        def run(role: str, lm: LoadedModel, side: tuple[Task, EncodedTask], circuits: Sequence[float],
                budget: int) -> ModelTaskRun:
            task, enc = side
            steps = len(lm.adapter.components()) * (1 + len(circuits))  # the sweep, then one pruning per threshold
            advance = progress(f"{item.name}: {role}", steps) if progress else None
            return run_model_on_task(lm, task, options.ablation, seed=options.seed, method=options.method,
                                     exact_top=options.exact_top, circuit_thresholds=circuits,
                                     memory_budget=budget, progress=advance, encoded=enc,
                                     edges=edge_method if role != "null student" else EdgeMethod.NONE)

        def run_all(budget: int) -> tuple[ModelTaskRun, ModelTaskRun, ModelTaskRun | None]:
            return (run("teacher", teacher, item.teacher, thresholds, budget),
                    run("student", student, item.student, thresholds, budget),
                    run("null student", null_student, item.student, (), budget) if null_student is not None else None)

        t_run, s_run, null_run = with_less_memory(run_all, options.memory_budget, f"task '{item.name}'")
        same_tokens = same_tokenisation(item.teacher[1], item.student[1])
        result.runs[item.name] = (t_run, s_run)
        analysis = analyse_runs(t_run, s_run, same_tokens=same_tokens, null_run=null_run, n_boot=options.n_boot,
                                seed=options.seed)
        result.analyses[item.name] = analysis
        result.warnings.extend(analysis.warnings)
        if store is not None:
            store.save(item, task_record(result, item.name))
    return result


def task_record(comparison: Comparison, name: str) -> TaskRecord:
    """One computed task as it will appear in the outputs (what a checkpoint holds)."""
    from circuitdiff.results import _jsonable

    t_run, s_run = comparison.runs[name]
    analysis = comparison.analyses[name]
    return TaskRecord(name, _jsonable(_task_entry(t_run, s_run, analysis)), list(analysis.warnings),
                      _per_prompt_task_frame(name, (t_run, s_run)), analysis.similarity_long(name))


def same_tokenisation(a: EncodedTask, b: EncodedTask) -> bool:
    return a.input_ids.shape == b.input_ids.shape and bool(torch.equal(a.input_ids, b.input_ids))


def random_like(lm: LoadedModel, seed: int) -> LoadedModel:
    """A freshly initialised model of ``lm``'s architecture: the chance baseline for alignment."""
    torch.manual_seed(seed)
    dtype = next(lm.model.parameters()).dtype  # a bf16 run gets a bf16 baseline (and half the memory)
    model = type(lm.model)(lm.model.config).to(device=lm.device, dtype=dtype).eval()
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
    dtype: str | torch.dtype = torch.float32,
    device_map: str | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Compare a teacher with its student on ``tasks``; returns the results dict (and writes it to ``out``).

    With ``out`` and ``resume``, tasks finished by an earlier run with the same options and
    models are reused from ``out/tasks`` and each new task is checkpointed there.
    ``options.memory_budget <= 0`` means automatic (half the free accelerator memory).
    """
    torch_dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    load = lambda spec: spec if isinstance(spec, LoadedModel) else load_model(  # noqa: E731
        spec, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=device, dtype=torch_dtype,
        device_map=device_map,
    )
    t_model, s_model = load(teacher), load(student)
    if options.memory_budget <= 0:
        options = replace(options, memory_budget=auto_budget(t_model.device, DEFAULT_MEMORY_BUDGET))
    store = TaskStore(Path(out), run_fingerprint(t_model, s_model, options)) if out is not None and resume else None
    comparison = run_comparison(t_model, s_model, tasks, options, progress, store=store)
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
        "attribution_spearman": run.attribution_spearman,
        "components": [asdict(e) for e in run.effects],
        **({"edges": run.edges.to_json()} if run.edges is not None else {}),
    }


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
                                                       analysis.matching)
    return entry


def results_dict(comparison: Comparison) -> dict[str, Any]:
    from circuitdiff import __version__

    options = asdict(comparison.options)
    options["ablation"] = comparison.options.ablation.value
    options["method"] = comparison.options.method.value
    tasks: dict[str, Any] = {}
    for name in comparison.task_names():
        if name in comparison.restored:
            tasks[name] = comparison.restored[name].entry
            continue
        t_run, s_run = comparison.runs[name]
        tasks[name] = _task_entry(t_run, s_run, comparison.analyses[name])
    return {
        "circuitdiff_version": __version__,
        "options": options,
        "teacher": asdict(comparison.teacher.info),
        "student": asdict(comparison.student.info),
        "tasks": tasks,
        "warnings": comparison.warnings,
    }


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


def per_prompt_frame(comparison: Comparison) -> pd.DataFrame:
    frames = [comparison.restored[task].per_prompt if task in comparison.restored
              else _per_prompt_task_frame(task, comparison.runs[task]) for task in comparison.task_names()]
    return pd.concat(frames, ignore_index=True)


def write_outputs(comparison: Comparison, results: dict[str, Any], out: Path) -> None:
    """results.json, the Parquet tables and the report, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / COMPONENTS_TABLE, components_frame(results))
    write_table(out / PER_PROMPT_TABLE, per_prompt_frame(comparison))
    sims = [comparison.restored[task].similarity if task in comparison.restored
            else comparison.analyses[task].similarity_long(task) for task in comparison.task_names()]
    write_table(out / SIMILARITY_TABLE, pd.concat(sims, ignore_index=True))
    if comparison.options.edges != EdgeMethod.NONE.value:
        write_table(out / EDGES_TABLE, edges_frame(results))
    write_json(out / RESULTS_JSON, results)
