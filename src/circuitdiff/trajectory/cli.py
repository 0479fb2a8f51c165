"""``circuitdiff trajectory``: the teacher against every checkpoint of a run, as a table and a page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

MODEL_FORMS = "built-in name (tiny-gpt2, ...), local folder, folder/file.gguf or Hugging Face id."


def trajectory(
    runs: list[Path] = typer.Argument(..., help="A run folder (its checkpoints/step-N folders, as "
                                      "'lab distil --save-every N' writes), or model folders in training order."),
    teacher: str = typer.Option(..., help=f"Teacher: {MODEL_FORMS}"),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Built-in task name or JSONL file; repeatable."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN/trajectory for one run folder)."),
    ablation: str = typer.Option("mean", help="zero | mean | resample | noising | denoising."),
    method: str = typer.Option("exact", help="exact | attribution | hybrid."),
    n_prompts: int = typer.Option(64, min=2, help="Prompts per built-in task."),
    seed: int = typer.Option(0, help="Seed for task generation, resampling and bootstrap."),
    n_boot: int = typer.Option(1000, min=10, help="Bootstrap resamples for intervals."),
    circuits: bool = typer.Option(True, help="Discover circuits (for the circuit overlap column)."),
    circuit_thresholds: str = typer.Option("0.1,0.2,0.3", help="Pruning thresholds, each a share of the clean metric."),
    null_model: bool = typer.Option(True, "--null/--no-null", help="Score random students as a chance baseline."),
    n_null: int = typer.Option(10, min=1, help="Random students behind the chance level."),
    measure: str = typer.Option("linear_cka", help="Similarity behind matching and alignment."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Compare the teacher with every checkpoint of a distillation run: trajectory.parquet + trajectory.html.

    A checkpoint whose comparison an earlier run finished (same options, tasks and weights) is reused.
    Checkpoints run one after another in this process.
    """
    from circuitdiff.cli.parsing import parse_thresholds
    from circuitdiff.options import CompareOptions
    from circuitdiff.trajectory.checkpoints import find_checkpoints
    from circuitdiff.trajectory.report import write_trajectory_report
    from circuitdiff.trajectory.rows import TRAJECTORY_TABLE
    from circuitdiff.trajectory.run import run_trajectory

    options = CompareOptions(ablation=ablation, method=method, n_prompts=n_prompts, seed=seed, n_boot=n_boot,
                             circuits=circuits, circuit_thresholds=parse_thresholds(circuit_thresholds),
                             null_model=null_model, n_null=n_null, measure=measure)
    find_checkpoints(runs)  # a bad run folder fails before any model loads
    folder = out if out is not None else (runs[0] / "trajectory" if len(runs) == 1 else Path("trajectory-out"))
    console = Console(stderr=True)

    def told(checkpoint: object, reused: bool) -> None:
        console.print(f"{checkpoint.label}: {'finished earlier, reused' if reused else 'comparing'}")  # type: ignore[attr-defined]

    table = run_trajectory(teacher, runs, task or ["ioi"], folder, options, progress=progress, on_checkpoint=told)
    page = write_trajectory_report(table, folder, f"Trajectory: {teacher} vs {runs[0]}")
    Console().print(f"trajectory: {folder / TRAJECTORY_TABLE} ({len(table)} rows); report: {page}")
