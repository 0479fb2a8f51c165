"""``circuitdiff trajectory``: the teacher against every checkpoint of a run, as a table and a page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from circuitdiff.cli.run_flags import Address, CpusPerJob, DeviceMap, Dtype, GpusPerJob

MODEL_FORMS = "built-in name (tiny-gpt2, ...), local folder, folder/file.gguf or Hugging Face id."


def trajectory(
    runs: list[Path] = typer.Argument(..., help="A run folder (its checkpoints/step-N folders, as "
                                      "'lab distil --save-every N' writes), a Trainer's output_dir (its "
                                      "checkpoint-N folders), or model folders in training order."),
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
    progress: bool = typer.Option(True, help="Show progress bars (local backend)."),
    backend: str = typer.Option("local", help="local (one checkpoint after another, the teacher run once per task) "
                                "| ray (one job per checkpoint)."),
    address: Address = None,
    cpus_per_job: CpusPerJob = 1.0,
    gpus_per_job: GpusPerJob = 0.0,
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: Dtype = "float32",
    device_map: DeviceMap = None,
) -> None:
    """Compare the teacher with every checkpoint of a distillation run: trajectory.parquet + trajectory.html.

    A checkpoint whose comparison an earlier run finished (same options, tasks and weights) is reused.
    On the local backend the teacher is loaded and run once per task for all checkpoints.
    """
    from circuitdiff.cli.parsing import parse_thresholds
    from circuitdiff.sweep.backends import check_settings
    from circuitdiff.sweep.jobs import RunSettings
    from circuitdiff.options import CompareOptions
    from circuitdiff.trajectory.checkpoints import find_checkpoints
    from circuitdiff.trajectory.report import write_trajectory_report
    from circuitdiff.trajectory.rows import TRAJECTORY_TABLE
    from circuitdiff.trajectory.run import run_trajectory

    options = CompareOptions(ablation=ablation, method=method, n_prompts=n_prompts, seed=seed, n_boot=n_boot,
                             circuits=circuits, circuit_thresholds=parse_thresholds(circuit_thresholds),
                             null_model=null_model, n_null=n_null, measure=measure)
    find_checkpoints(runs)  # a bad run folder, backend or device fails before any model loads
    check_settings(backend, device, dtype, device_map)
    settings = RunSettings(device=device, dtype=dtype, device_map=device_map)
    folder = out if out is not None else (runs[0] / "trajectory" if len(runs) == 1 else Path("trajectory-out"))
    console = Console(stderr=True)

    def told(checkpoint: object, outcome: dict) -> None:
        label = checkpoint.label  # type: ignore[attr-defined]
        if outcome.get("reused"):
            console.print(f"{label}: finished earlier, reused")
        elif outcome.get("ok"):
            console.print(f"{label}: compared in {outcome['seconds']:.1f} s")
        else:
            console.print(f"{label}: failed: {str(outcome.get('error')).splitlines()[0]}", markup=False)

    ray_options = dict(address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job) if backend == "ray" else {}
    table = run_trajectory(teacher, runs, task or ["ioi"], folder, options, progress=progress, on_checkpoint=told,
                           settings=settings, backend=backend, **ray_options)
    page = write_trajectory_report(table, folder, f"Trajectory: {teacher} vs {runs[0]}")
    Console().print(f"trajectory: {folder / TRAJECTORY_TABLE} ({len(table)} rows); report: {page}")
