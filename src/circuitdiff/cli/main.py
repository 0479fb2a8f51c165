"""The ``circuitdiff`` command line: compare, tasks, lab.

User errors print one line and exit 2; an interrupt exits 130 after the files already
written (each written atomically) stay in place.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from circuitdiff.cli.display import print_summary, rich_progress, tasks_table
from circuitdiff.errors import CircuitDiffError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="What did distillation do to a model's insides?")
console = Console(stderr=True)
MODEL_FORMS = "built-in name (tiny-gpt2, smollm2-135m, ...), local folder, folder/file.gguf or Hugging Face id."


def parse_thresholds(text: str) -> tuple[float, ...]:
    """'0.1,0.2' -> (0.1, 0.2); each strictly between 0 and 1."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CircuitDiffError(f"circuit thresholds must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise CircuitDiffError(f"circuit thresholds must lie strictly between 0 and 1, got {text!r}")
    return values


@app.command()
def compare(
    teacher: Optional[str] = typer.Option(None, help=f"Teacher: {MODEL_FORMS}"),
    student: Optional[str] = typer.Option(None, help=f"Student: {MODEL_FORMS}"),
    pair: Optional[str] = typer.Option(None, help="A built-in pair (default tiny-gpt2 when no models are given)."),
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
    null_model: bool = typer.Option(True, "--null/--no-null", help="Score a random student as a chance baseline."),
    report: bool = typer.Option(True, help="Write report.html and figures."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda or cuda:1."),
    dtype: str = typer.Option("float32", help="Weights dtype: float32 | bfloat16 | float16."),
    device_map: Optional[str] = typer.Option(None, help="'auto': shard models over all devices (needs accelerate)."),
    max_memory: Optional[str] = typer.Option(None, help="Activation memory per forward pass, e.g. 4GB or auto (default 1GiB)."),
    resume: bool = typer.Option(True, help="Reuse tasks an interrupted run with the same options finished in OUT."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (unsafe: runs code from the file)."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the checkpoint's repository."),
) -> None:
    """Measure every head and MLP in both models, match them and score the alignment."""
    from circuitdiff.compare import CompareOptions, compare as run_compare
    from circuitdiff.interventions.ablation import Ablation
    from circuitdiff.interventions.edge_methods import parse_edge_method
    from circuitdiff.interventions.methods import Method
    from circuitdiff.interventions.sweep import DEFAULT_MEMORY_BUDGET
    from circuitdiff.pairs_index import resolve_pair
    from circuitdiff.sweep.resources import check_device, parse_dtype, parse_memory

    try:
        ablation_kind = Ablation(ablation)
    except ValueError:
        raise CircuitDiffError(f"unknown ablation '{ablation}'; choose one of {', '.join(a.value for a in Ablation)}") from None
    try:
        method_kind = Method(method)
    except ValueError:
        raise CircuitDiffError(f"unknown method '{method}'; choose one of {', '.join(m.value for m in Method)}") from None
    teacher, student, default_tasks = resolve_pair(pair, teacher, student)
    parse_dtype(dtype)
    check_device(device, device_map)
    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else parse_memory(max_memory) or 0  # 0: auto
    options = CompareOptions(ablation=ablation_kind, n_prompts=n_prompts, seed=seed, first_token=first_token,
                             n_boot=n_boot, circuits=circuits, circuit_thresholds=parse_thresholds(circuit_thresholds),
                             null_model=null_model, memory_budget=budget,
                             method=method_kind, exact_top=exact_top, edges=parse_edge_method(edges).value)
    with rich_progress(console) as progress:
        results = run_compare(teacher, student, task or default_tasks, options, out, allow_pickle=allow_pickle,
                              trust_remote_code=trust_remote_code, device=device, progress=progress, dtype=dtype,
                              device_map=device_map, resume=resume)
    if report:
        from circuitdiff.report import write_report

        write_report(results, out)
    print_summary(Console(), results, out)


@app.command("report")
def report_cmd(out: Path = typer.Argument(Path("circuitdiff-out"), help="Folder holding results.json.")) -> None:
    """(Re)write report.html and its figures from a results folder."""
    from circuitdiff.report import render_from_folder

    Console().print(f"report: {render_from_folder(out)}")


@app.command("tasks")
def list_tasks() -> None:
    """List the built-in tasks with one example each."""
    Console().print(tasks_table())


def _mount_lab() -> None:
    from circuitdiff.lab.cli import app as lab_app

    app.add_typer(lab_app, name="lab", help="Train teachers and distil students (the distillation lab).")


def _mount_sweep() -> None:
    from circuitdiff.sweep.cli import sweep

    if not any(c.name == "sweep" for c in app.registered_commands):
        app.command("sweep")(sweep)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill``) stops a run like Ctrl-C: exit 130, complete files only."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    """Entry point: one-line errors for user mistakes, tracebacks only for bugs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _interrupt_on_sigterm()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening
    _mount_lab()
    _mount_sweep()
    try:
        code = app(standalone_mode=False)
    except CircuitDiffError as exc:
        # escaped: messages quote user input, which must not be read as markup; never wrapped
        console.print(f"[bold red]error:[/] {escape(' '.join(str(exc).splitlines()))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        console.print("interrupted: files already written are complete and kept")
        sys.exit(130)
    except click.ClickException as exc:  # usage errors, in click's own one-line format
        exc.show()
        sys.exit(exc.exit_code)
    if code == 130:  # typer turns KeyboardInterrupt (and so SIGTERM) into exit code 130
        console.print("interrupted: files already written are complete and kept")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
