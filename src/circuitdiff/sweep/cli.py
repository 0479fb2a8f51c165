"""``circuitdiff sweep SWEEP.yaml``: the command, mounted on the main CLI by ``cli/main.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep file (YAML): pairs, tasks, seeds, ablations, options."),
    out: Path = typer.Option(Path("circuitdiff-sweep"), help="Output folder: jobs/, merged tables, summary."),
    backend: str = typer.Option("local", help="local (one job after another) | ray."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (auto, ray://head:10001); default: a local Ray instance."),
    cpus_per_job: float = typer.Option(1.0, min=0.0, help="Ray: CPUs each job reserves."),
    gpus_per_job: float = typer.Option(0.0, min=0.0, help="Ray: GPUs each job reserves (e.g. 1, or 0.5 to share)."),
    device: str = typer.Option("cpu", help="torch device for every job, e.g. cuda."),
    dtype: str = typer.Option("float32", help="Weights dtype: float32 | bfloat16 | float16."),
    device_map: Optional[str] = typer.Option(None, help="'auto': shard models over all devices (needs accelerate)."),
    max_memory: Optional[str] = typer.Option(None, help="Activation memory per forward pass, e.g. 4GB or auto (default 1GiB)."),
    resume: bool = typer.Option(True, help="Skip jobs (and tasks) an earlier run of the same sweep finished."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (unsafe: runs code from the file)."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the checkpoints' repositories."),
) -> None:
    """Run every pair x task x seed x ablation of a sweep file, then merge them into one table and report."""
    from rich.console import Console

    from circuitdiff.sweep.backends import check_backend
    from circuitdiff.interventions.choices import DEFAULT_MEMORY_BUDGET
    from circuitdiff.sweep.jobs import RunSettings
    from circuitdiff.sweep.merge import JOBS_TABLE, SUMMARY_HTML, SUMMARY_MD
    from circuitdiff.resources import check_device, parse_dtype, parse_memory
    from circuitdiff.sweep.runner import run_sweep
    from circuitdiff.sweep.spec import load_sweep

    from circuitdiff.compare import make_out_folder

    spec = load_sweep(sweep_file)
    make_out_folder(out)
    check_backend(backend)
    parse_dtype(dtype)
    if backend == "local":
        check_device(device, device_map)
    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else parse_memory(max_memory) or 0
    settings = RunSettings(device=device, dtype=dtype, device_map=device_map, memory_budget=budget,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, resume=resume)
    console = Console(stderr=True)
    console.print(f"sweep [bold]{spec.name}[/]: {len(spec.jobs())} jobs on the {backend} backend", highlight=False)
    outcome = run_sweep(spec, out, settings, backend, address=address, cpus_per_job=cpus_per_job,
                        gpus_per_job=gpus_per_job, echo=lambda msg: console.print(msg, highlight=False, markup=False))
    console.print(f"merged {len(outcome.jobs)} jobs in {outcome.seconds:.1f} s: {outcome.out / JOBS_TABLE}, "
                  f"{outcome.out / SUMMARY_MD}, {outcome.out / SUMMARY_HTML}", highlight=False, markup=False)
