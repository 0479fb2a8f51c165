"""The ``circuitdiff`` command line: compare, report, tasks, sweep, reproduce, trajectory, lab.

Every user error, circuitdiff's own or a usage error from typer, prints one line and
exits 2; an interrupt exits 130 after the files already written (each written atomically)
stay in place. torch and transformers are imported only by the commands that run models,
so ``--help`` and ``tasks`` answer at once.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from circuitdiff.analysis.measures import measure_names
from circuitdiff.cli.display import print_summary, tasks_table
from circuitdiff.cli.parsing import parse_thresholds
from circuitdiff.cli.run_flags import DeviceMap, Dtype
from circuitdiff.errors import CircuitDiffError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="What did distillation do to a model's insides?")
console = Console(stderr=True)
MEASURES = " | ".join(measure_names())  # numpy only: --help stays free of torch
MODEL_FORMS = "built-in name (tiny-gpt2, smollm2-135m, ...), local folder, folder/file.gguf or Hugging Face id."


@app.command()
def compare(
    teacher: Optional[str] = typer.Option(None, help=f"Teacher: {MODEL_FORMS}"),
    student: Optional[str] = typer.Option(None, help=f"Student: {MODEL_FORMS}"),
    pair: Optional[str] = typer.Option(None, help="A built-in pair (default tiny-gpt2 when no models are given)."),
    control: Optional[str] = typer.Option(None, help="Also compare the teacher with this unrelated model (a sanity "
                                          f"floor, e.g. DistilBERT against GPT-2): {MODEL_FORMS}"),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Built-in task name or JSONL file; repeatable."),
    ablation: str = typer.Option("mean", help="zero | mean | resample | noising | denoising."),
    method: str = typer.Option("exact", help="exact | attribution (one forward+backward, a linear estimate) | hybrid."),
    exact_top: int = typer.Option(20, min=1, help="With --method hybrid: how many top components get exact effects."),
    edges: str = typer.Option("none", help="Edge effects: none | exact (also scores eap, eap-ig) | eap | eap-ig."),
    n_prompts: int = typer.Option(64, min=2, help="Prompts per built-in task."),
    seed: int = typer.Option(0, help="Seed for task generation, resampling and bootstrap."),
    out: Path = typer.Option(Path("circuitdiff-out"), help="Output folder."),
    first_token: bool = typer.Option(False, help="Use the first token of multi-token answers instead of failing."),
    n_boot: int = typer.Option(1000, min=10, help="Bootstrap resamples for intervals."),
    circuits: bool = typer.Option(True, help="Discover circuits (iterative pruning)."),
    circuit_thresholds: str = typer.Option("0.1,0.2,0.3", help="Pruning thresholds, each a share of the clean "
                                           "metric; each costs about one forward pass per component."),
    null_model: bool = typer.Option(True, "--null/--no-null", help="Score random students as a chance baseline."),
    n_null: int = typer.Option(10, min=1, help="Random students (seeded initialisations) behind the chance level."),
    null_cache: Optional[Path] = typer.Option(None, envvar="CIRCUITDIFF_NULL_CACHE", help="Keep the random students "
                                              "in this folder for every later run on the same student architecture, "
                                              "prompts and null options (default: none)."),
    measure: str = typer.Option("linear_cka", help=f"Similarity behind matching and alignment: {MEASURES}."),
    report: bool = typer.Option(True, help="Write report.html and figures."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda or cuda:1."),
    dtype: Dtype = "float32",
    device_map: DeviceMap = None,
    max_memory: Optional[str] = typer.Option(None, help="Activation memory per forward pass, e.g. 4GB or auto (default 1GiB)."),
    resume: bool = typer.Option(True, help="Reuse tasks an interrupted run with the same options finished in OUT."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (unsafe: runs code from the file)."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the checkpoint's repository."),
    features: bool = typer.Option(False, "--features", help="Also train a crosscoder on both models (`circuitdiff "
                                  "features` with its defaults) and add its section to the report."),
) -> None:
    """Measure every head and MLP in both models, match them and score the alignment."""
    from circuitdiff.compare import CompareOptions, check_paths, compare as run_compare
    from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET
    from circuitdiff.pairs_index import resolve_pair
    from circuitdiff.resources import check_device, parse_dtype, parse_memory

    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else parse_memory(max_memory) or 0  # 0: auto
    options = CompareOptions(ablation=ablation, n_prompts=n_prompts, seed=seed, first_token=first_token,
                             n_boot=n_boot, circuits=circuits, circuit_thresholds=parse_thresholds(circuit_thresholds),
                             null_model=null_model, n_null=n_null, memory_budget=budget, method=method,
                             exact_top=exact_top, edges=edges, measure=measure, control=control)
    teacher, student, default_tasks = resolve_pair(pair, teacher, student)
    tasks = task or default_tasks
    check_paths(tasks, options, out)  # before any model is loaded
    parse_dtype(dtype)
    check_device(device, device_map)
    results = run_compare(teacher, student, tasks, options, out, allow_pickle=allow_pickle,
                          trust_remote_code=trust_remote_code, device=device, progress=True, dtype=dtype,
                          device_map=device_map, resume=resume, report=report, null_cache=null_cache)
    print_summary(Console(), results, out)
    if features:
        from circuitdiff.features.run import FeatureOptions, features as run_features
        from circuitdiff.report import render_from_folder

        run_features(teacher, student, tasks, out, FeatureOptions(n_prompts=n_prompts, seed=seed), device=device,
                     progress=console.print)
        if report:
            Console().print(f"report with features: {render_from_folder(out)}")


@app.command("report")
def report_cmd(out: Path = typer.Argument(Path("circuitdiff-out"), help="Folder holding results.json.")) -> None:
    """(Re)write report.html and its figures from a results folder."""
    from circuitdiff.report import render_from_folder

    Console().print(f"report: {render_from_folder(out)}")


@app.command("tasks")
def list_tasks() -> None:
    """List the built-in tasks with one example each."""
    Console().print(tasks_table())


LAB_HELP = "Train teachers and distil students (the distillation lab)."


def _command_name(args: list[str]) -> str | None:
    """The subcommand ``args`` invoke (the first word that is not an option)."""
    return next((a for a in args if not a.startswith("-")), None)


def _mount_lab(args: list[str]) -> None:
    """The real lab app only when it runs: it imports torch, which ``--help`` must not wait for."""
    if _command_name(args) == "lab":
        from circuitdiff.lab.cli import app as lab_app
    else:  # listed in --help under the same name and text; never invoked
        lab_app = typer.Typer()
    app.add_typer(lab_app, name="lab", help=LAB_HELP)


def _mount_sweep() -> None:
    from circuitdiff.sweep.cli import sweep

    if not any(c.name == "sweep" for c in app.registered_commands):
        app.command("sweep")(sweep)


def _mount_reproduce() -> None:
    from circuitdiff.cli.reproduce import reproduce

    if not any(c.name == "reproduce" for c in app.registered_commands):
        app.command("reproduce")(reproduce)


def _mount_trajectory() -> None:
    from circuitdiff.trajectory.cli import trajectory

    if not any(c.name == "trajectory" for c in app.registered_commands):
        app.command("trajectory")(trajectory)


def _mount_features() -> None:
    from circuitdiff.cli.features import features_cmd

    if not any(c.name == "features" for c in app.registered_commands):
        app.command("features")(features_cmd)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill``) stops a run like Ctrl-C: exit 130, complete files only."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _one_line(message: str) -> None:
    # escaped: messages quote user input, which must not be read as markup; never wrapped
    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def run_app(args: list[str]) -> int:
    """Run the CLI on ``args`` and return the exit code; every user mistake is one line on stderr."""
    try:
        code = app(args, prog_name="circuitdiff", standalone_mode=False)
    except CircuitDiffError as exc:
        _one_line(str(exc))
        return 2
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # click's usage errors (typer >= 0.29 ships its own click)
        message = exc.format_message()
        if message:  # empty for a bare group: its help is already shown
            _one_line(message)
        return 2 if exc.exit_code in (1, 2) else exc.exit_code
    if code == 130:  # typer turns KeyboardInterrupt (and so SIGTERM) into exit code 130
        console.print("interrupted: files already written are complete and kept")
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point: one-line errors for user mistakes, tracebacks only for bugs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by transformers on import; our bars say enough
    _interrupt_on_sigterm()
    args = sys.argv[1:]
    _mount_lab(args)
    _mount_sweep()
    _mount_reproduce()
    _mount_trajectory()
    _mount_features()
    sys.exit(run_app(args))


if __name__ == "__main__":
    main()
