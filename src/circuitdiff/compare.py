"""The main job: load -> run each task on both models -> analyse the pair -> write results.

Everything that can fail on bad input (loading, task files, tokenisation) is checked
for both models and every task before any expensive computation starts. What a run
computed becomes files in ``circuitdiff.comparison``.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from circuitdiff.analysis.calibration import NullDraw
from circuitdiff.analysis.pair import MIN_PROMPTS, analyse_runs
from circuitdiff.checkpoint import TaskStore, run_fingerprint
from circuitdiff.comparison import Comparison, results_dict, task_record, write_outputs  # noqa: F401  (public here)
from circuitdiff.control import run_control_task
from circuitdiff.errors import CircuitDiffError, TaskEncodingError, TaskFileError
from circuitdiff.interventions.edge_methods import EdgeMethod, check_edge_support, parse_edge_method
from circuitdiff.interventions.edges import all_edges
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET
from circuitdiff.models.loading import LoadedModel, from_hugging_face, load_model, resolve
from circuitdiff.null import null_draws, random_like  # noqa: F401  (random_like: public since 0.1)
from circuitdiff.null_cache import NullCache, default_folder as default_null_folder
from circuitdiff.options import MIN_BOOT, CompareOptions, OptionsError, as_enum, with_options  # noqa: F401  (public here since 0.1)
from circuitdiff.pipeline import ModelTaskRun, model_context, run_model_on_task
from circuitdiff.progress import Progress, progress_bars
from circuitdiff.resources import auto_budget, parse_dtype, with_less_memory
from circuitdiff.schema import Note
from circuitdiff.shared_runs import SharedRuns
from circuitdiff.tasks import EncodedTask, Task, encode_task, get_task
from circuitdiff.tasks.encode import drop_multi_token_items, split_items
from circuitdiff.tasks.prepared import PreparedTask

def task_for_model(name: str, lm: LoadedModel, options: CompareOptions) -> Task:
    task = get_task(name, n_prompts=options.n_prompts, seed=options.seed, masked=lm.adapter.masked_lm)
    if task.masked != lm.adapter.masked_lm:
        kind = "masked" if task.masked else "causal"
        raise TaskFileError(f"task '{name}' is {kind} but model '{lm.name}' is not a {kind} LM")
    return task


def prepare_tasks(teacher: LoadedModel, student: LoadedModel, names: Sequence[str], options: CompareOptions) -> list[PreparedTask]:
    """Build and tokenise every task for both models; fails before any forward pass."""
    prepared = []
    models = (teacher, student)
    for name in names:
        tasks, dropped = [task_for_model(name, lm, options) for lm in models], None
        masked = any(lm.adapter.masked_lm for lm in models)  # a masked LM scores one [MASK]: one-token answers only
        if not options.first_token and masked:  # facts: drop what a tokenizer splits, keep the rest
            tasks, dropped = drop_multi_token_items(tasks, [lm.tokenizer for lm in models])
            if dropped:
                warnings.warn(dropped, stacklevel=1)
        sides = [(task, encode_task(task, lm.tokenizer, first_token=options.first_token,
                                    max_length=model_context(lm)))
                 for task, lm in zip(tasks, models, strict=True)]
        if len(sides[0][0]) < MIN_PROMPTS:
            why = f" ({dropped}; or ask for more with --n-prompts)" if dropped else ""
            raise TaskFileError(f"task '{name}' has {len(sides[0][0])} prompts; circuitdiff needs at least {MIN_PROMPTS}{why}")
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
    control: LoadedModel | None = None,
    shared: SharedRuns | None = None,
    null_cache: NullCache | None = None,
) -> Comparison:
    """Run every task on both models; with a ``store``, reuse finished tasks and checkpoint each new one.

    With a ``control`` model, the teacher is also compared with it on every task (``circuitdiff.control``).
    With ``shared``, the teacher's run of a task and the random students' draws are taken from it
    when it holds ones made the same way, and kept in it otherwise (``circuitdiff.shared_runs``);
    ``null_cache`` does the same for the random students across processes (``circuitdiff.null_cache``).
    """
    edge_method = parse_edge_method(options.edges)
    for lm in (teacher, student):
        check_edge_support(lm.adapter, edge_method, lm.name)
    with warnings.catch_warnings(record=True) as caught:  # e.g. unknown keys in a task file: keep, do not lose
        warnings.simplefilter("always")
        prepared = prepare_tasks(teacher, student, tasks, options)
        controls = {c.name: c for c in prepare_tasks(teacher, control, tasks, options)} if control is not None else {}
    result = Comparison(teacher, student, options, control=control)
    result.notes.extend(dict.fromkeys(Note(topic="task-file", code="task-file.warning", text=str(w.message))
                                      for w in caught if "circuitdiff" in w.filename))
    thresholds = options.circuit_thresholds if options.circuits else ()
    records = {item.name: store.load(item) if store is not None else None for item in prepared}
    pending = [item for item in prepared if records[item.name] is None]
    nulls = with_less_memory(
        lambda budget: run_null(student, pending, options, budget, progress, shared, null_cache),
        options.memory_budget, "the random students")
    for item in prepared:
        result.order.append(item.name)
        record = records[item.name]
        if record is not None:
            result.restored[item.name] = result.records[item.name] = record
            result.notes.extend(record.notes)
            if progress:
                progress(f"{item.name}: finished earlier, reused", 1)(1)
            continue
        def run(role: str, lm: LoadedModel, side: tuple[Task, EncodedTask], circuits: Sequence[float],
                budget: int) -> ModelTaskRun:
            task, enc = side
            steps = len(lm.adapter.components()) * (1 + len(circuits))  # the sweep, then one pruning per threshold
            advance = progress(f"{item.name}: {role}", steps) if progress else None
            n_edges = len(all_edges(lm.adapter)) if edge_method is EdgeMethod.EXACT else 0
            edge_advance = progress(f"{item.name}: {role}, exact edges", n_edges) if progress and n_edges else None
            return run_model_on_task(lm, task, options.ablation, seed=options.seed, method=options.method,
                                     exact_top=options.exact_top, circuit_thresholds=circuits,
                                     memory_budget=budget, progress=advance, encoded=enc, n_boot=options.n_boot,
                                     edges=edge_method, edge_progress=edge_advance)

        def run_all(budget: int) -> tuple[ModelTaskRun, ModelTaskRun]:
            kept = shared.teacher_run(teacher, item.name, item.teacher[1], options) if shared is not None else None
            if kept is not None and progress:
                progress(f"{item.name}: teacher, reused", 1)(1)
            t_run = kept if kept is not None else run("teacher", teacher, item.teacher, thresholds, budget)
            if shared is not None and kept is None:
                shared.keep_teacher_run(teacher, item.name, item.teacher[1], options, t_run)
            return t_run, run("student", student, item.student, thresholds, budget)

        t_run, s_run = with_less_memory(run_all, options.memory_budget, f"task '{item.name}'")
        same_tokens = same_tokenisation(item.teacher[1], item.student[1])
        result.runs[item.name] = (t_run, s_run)
        analysis = analyse_runs(t_run, s_run, same_tokens=same_tokens, null_draws=nulls.get(item.name, []),
                                n_boot=options.n_boot, seed=options.seed, measure=options.measure)
        analysis.notes.extend(truncation_notes(item, (teacher, student), options))
        if control is not None:
            side = controls[item.name]
            result.controls[item.name] = run_control_task(
                teacher, control, side, options, same_tokens=same_tokenisation(side.teacher[1], side.student[1]),
                teacher_run=t_run if same_tokenisation(item.teacher[1], side.teacher[1]) else None, progress=progress)
            analysis.notes.extend(result.controls[item.name].notes)
        result.analyses[item.name] = analysis
        result.examples[item.name] = task_example(item.teacher[0], {"teacher": (teacher, item.teacher[1]),
                                                                    "student": (student, item.student[1])})
        result.notes.extend(analysis.notes)
        result.records[item.name] = task_record(result, item.name)
        if store is not None:
            store.save(item, result.records[item.name])
    return result


def task_example(task: Task, encoded: dict[str, tuple[LoadedModel, EncodedTask]] | None = None) -> dict[str, Any]:
    """The first prompt of a task, for the report; with ``encoded`` (role -> model and its encoding) also
    each model's continuation tokens when some model's answer or distractor takes several."""
    first = task.prompts[0]
    out: dict[str, Any] = {"prompt": first.prompt, "answer": first.answer, "distractor": first.distractor}
    sides = [(role, lm, enc) for role, (lm, enc) in (encoded or {}).items()]
    if any(enc.branches > 1 for _, _, enc in sides):
        out["continuations"] = [
            {"model": role, **{what: [lm.tokenizer.decode([t]) for t in enc.continuation(0, what).tolist()]
                               for what in ("answer", "distractor")}} for role, lm, enc in sides]
    return out


def truncation_notes(item: PreparedTask, models: tuple[LoadedModel, LoadedModel], options: CompareOptions) -> list[Note]:
    """With ``first_token``: which model's tokenizer cut which answers to their first token."""
    if not options.first_token:
        return []
    notes = []
    for lm, (task, _) in zip(models, (item.teacher, item.student)):
        try:
            split = split_items(task, encode_task(task, lm.tokenizer, first_token=False), lm.tokenizer)
            if split:
                raise TaskEncodingError(split)
        except TaskEncodingError as exc:
            detail = str(exc).split(": ", 1)[-1]
            notes.append(Note(task=item.name, model=lm.name, topic="tokenisation", code="tokenisation.first_token",
                              text=f"--first-token scored multi-token answers by their first token only "
                                   f"({detail[:300]})"))
    return notes


def same_tokenisation(a: EncodedTask, b: EncodedTask) -> bool:
    return a.input_ids.shape == b.input_ids.shape and bool(torch.equal(a.input_ids, b.input_ids))


def run_null(student: LoadedModel, items: Sequence[PreparedTask], options: CompareOptions, budget: int,
             progress: Progress | None, shared: SharedRuns | None = None,
             cache: NullCache | None = None) -> dict[str, list[NullDraw]]:
    """The chance level's random students on every task still to run (none when the null is off).

    Each random student is built once and run on all those tasks before the next one; tasks
    whose draws ``shared`` or the on-disk ``cache`` holds (same architecture, prompts and
    options) take them from there.
    """
    n_null = options.n_null if options.null_model else 0
    if n_null <= 0 or not items:
        return {}

    def keep(item: PreparedTask, draws: list[NullDraw], on_disk: bool) -> None:
        if shared is not None:
            shared.keep_null(student, item.name, item.student[1], options, draws)
        if cache is not None and on_disk:
            cache.keep(student, item.student[1], options, draws)

    def stored(item: PreparedTask) -> list[NullDraw] | None:
        draws = shared.null(student, item.name, item.student[1], options) if shared is not None else None
        if draws is None and cache is not None:
            draws = cache.load(student, item.student[1], options)
            if draws is not None:
                keep(item, draws, on_disk=False)
        return draws

    found = {item.name: stored(item) for item in items}
    result = {name: draws for name, draws in found.items() if draws is not None}
    todo = [item for item in items if found[item.name] is None]
    if not todo:
        return result
    advance = progress(f"{n_null} random students (chance level)", n_null) if progress else None
    draws = null_draws(student, [item.student[1] for item in todo], options.ablation, seed=options.seed,
                       n_null=n_null, memory_budget=budget, progress=advance)
    for item, per_task in zip(todo, draws):
        result[item.name] = per_task
        keep(item, per_task, on_disk=True)
    return result


ModelArg = Any
"""A model for ``compare``: a built-in name, a folder, a ``.gguf`` file, a Hub id, a
``LoadedModel``, or an in-memory Hugging Face ``(model, tokenizer)`` pair."""


@contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' own bars (loading weights) follow ``progress``; the global switch is restored after."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if before and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before and not enabled:
            hf_logging.enable_progress_bar()


def check_paths(tasks: Sequence[str], options: CompareOptions, out: str | Path | None) -> None:
    """Fail on a bad task name or file, or an unusable output folder, before any model loads."""
    for name in tasks:
        get_task(name, n_prompts=options.n_prompts, seed=options.seed)  # parses files; cheap for built-ins
    if out is not None:
        make_out_folder(out)


def make_out_folder(out: str | Path) -> Path:
    """Create the output folder now, so that an unusable ``--out`` fails before any model loads."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OptionsError(f"output folder '{out}' is an existing file; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionsError(f"cannot create output folder '{out}' ({exc.strerror or type(exc).__name__})") from None
    return folder


def as_loaded_model(spec: ModelArg, **load_kwargs: Any) -> LoadedModel:
    """Any ``ModelArg`` as a ``LoadedModel``: strings are loaded, a (model, tokenizer) pair is wrapped."""
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, (str, Path)):
        return load_model(str(spec), **load_kwargs)
    if isinstance(spec, tuple) and len(spec) == 2:
        return from_hugging_face(*spec)
    raise OptionsError(f"a model must be a name, a path, a LoadedModel or a (model, tokenizer) pair, "
                       f"not {type(spec).__name__}")


@contextmanager
def _as_control() -> Iterator[None]:
    """Name a failure to find or load the control model as the control's (one line, exit 2 on the command line)."""
    try:
        yield
    except CircuitDiffError as exc:
        raise OptionsError(f"control model: {exc}") from None


def check_control(name: str) -> None:
    """The cheap check (a missing folder or file), so that a bad control fails before any model loads."""
    with _as_control():
        resolve(name)


def load_control(name: str, load_kwargs: dict[str, Any]) -> LoadedModel:
    with _as_control():
        return as_loaded_model(name, **load_kwargs)


def compare(
    teacher: ModelArg,
    student: ModelArg,
    tasks: str | Sequence[str] = ("ioi",),
    options: CompareOptions | None = None,
    out: str | Path | None = None,
    *,
    progress: bool | Progress = True,
    report: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
    dtype: str | torch.dtype = torch.float32,
    device_map: str | None = None,
    resume: bool = True,
    shared: SharedRuns | None = None,
    null_cache: str | Path | None = None,
    **option_values: Any,
) -> dict[str, Any]:
    """Compare a teacher with its student on ``tasks`` and return the results dict.

    Args:
        teacher: a built-in name (``tiny-gpt2``), a folder, a ``.gguf`` file, a Hub id, a
            ``LoadedModel``, or an in-memory Hugging Face ``(model, tokenizer)`` pair.
        student: the same forms as ``teacher``.
        tasks: built-in task names or JSONL task files (one name is accepted as a string).
        options: a ``CompareOptions``; or give its fields as keywords (``n_prompts=16``,
            ``ablation="zero"``), which override the fields of ``options``.
        out: folder to write ``results.json``, the Parquet tables and (with ``report``)
            ``report.html``, exactly as the ``circuitdiff compare`` command does.
        progress: progress bars (rich in a terminal, tqdm widgets in Jupyter); ``False``
            silences them; a callable ``start(description, total) -> advance`` gets the events.
        report: with ``out``, also write ``report.html`` and its figures.
        allow_pickle: allow pickle checkpoints (unsafe: loading runs code from the file).
        trust_remote_code: allow model code from a checkpoint's repository.
        device: torch device for models loaded here, e.g. ``"cuda"``.
        dtype: weights dtype for models loaded here (``"bfloat16"`` or a ``torch.dtype``).
        device_map: ``"auto"`` shards models loaded here over all devices (needs accelerate).
        resume: with ``out``, reuse tasks an interrupted run with the same options finished
            there, and checkpoint each new task.
        shared: a ``SharedRuns`` for ``teacher`` (a ``LoadedModel``): the teacher's task runs and
            the random students are reused from it and kept in it, so comparing one teacher with
            many students of one architecture runs the teacher and the null once per task
            (``circuitdiff trajectory`` does this).
        null_cache: a folder keeping the random students on disk for every later run on the
            same architecture, prompts and null options (default: ``$CIRCUITDIFF_NULL_CACHE``,
            unset means none; see ``circuitdiff.null_cache``).
        **option_values: ``CompareOptions`` fields by name; an unknown name is an ``OptionsError``.
            ``control="tiny-distilbert"`` (a name, folder, ``.gguf`` or Hub id) also compares the
            teacher with that model on every task and puts the result under ``tasks.<task>.control``.

    Returns:
        The results dict that ``out/results.json`` holds.

    ``options.memory_budget <= 0`` means automatic (half the free accelerator memory).
    Every task, file and option is checked before a model is loaded.
    """
    options = with_options(options, **option_values)
    task_names = [tasks] if isinstance(tasks, str) else list(tasks)
    check_paths(task_names, options, out)
    if options.control is not None:
        check_control(options.control)
    folder = Path(null_cache) if null_cache is not None else default_null_folder()
    cache = NullCache(folder) if folder is not None else None  # created now: a bad folder fails before loading
    torch_dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    load_kwargs = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=device,
                       dtype=torch_dtype, device_map=device_map)
    with hf_progress_bars(progress is not False):
        t_model, s_model = as_loaded_model(teacher, **load_kwargs), as_loaded_model(student, **load_kwargs)
        c_model = load_control(options.control, load_kwargs) if options.control is not None else None
    if options.memory_budget <= 0:
        options = replace(options, memory_budget=auto_budget(t_model.device, DEFAULT_MEMORY_BUDGET))
    fingerprint = run_fingerprint(t_model, s_model, options, c_model) if out is not None and resume else None
    store = TaskStore(Path(out), fingerprint) if fingerprint is not None else None
    with progress_bars(progress) as start:
        comparison = run_comparison(t_model, s_model, task_names, options, start, store=store, control=c_model,
                                    shared=shared, null_cache=cache)
    results = results_dict(comparison)
    if out is not None:
        write_outputs(comparison, results, Path(out))
        if report:
            from circuitdiff.report import write_report

            write_report(results, Path(out))
    return results


class _CallableModule(types.ModuleType):
    """``circuitdiff.compare`` is both this module and the function: Python binds a package's
    attribute to a submodule when that is imported, so the module forwards calls to the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
