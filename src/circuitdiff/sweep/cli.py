"""``circuitdiff sweep SWEEP.yaml``: the command, mounted on the main CLI by ``cli/main.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from circuitdiff.cli.run_flags import Address, CpusPerJob, DeviceMap, Dtype, GpusPerJob


def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep file (YAML): pairs, tasks, seeds, ablations, options."),
    out: Path = typer.Option(Path("circuitdiff-sweep"), help="Output folder: jobs/, merged tables, summary."),
    backend: str = typer.Option("local", help="local (one job after another) | ray."),
    address: Address = None,
    cpus_per_job: CpusPerJob = 1.0,
    gpus_per_job: GpusPerJob = 0.0,
    device: str = typer.Option("cpu", help="torch device for every job, e.g. cuda."),
    dtype: Dtype = "float32",
    device_map: DeviceMap = None,
    max_memory: Optional[str] = typer.Option(None, help="Activation memory per forward pass, e.g. 4GB or auto (default 1GiB)."),
    resume: bool = typer.Option(True, help="Skip jobs (and tasks) an earlier run of the same sweep finished."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (unsafe: runs code from the file)."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the checkpoints' repositories."),
) -> None:
    """Run every pair x task x seed x ablation of a sweep file, then merge them into one table and report."""
    from rich.console import Console

    from circuitdiff.sweep.backends import check_settings
    from circuitdiff.interventions.choices import DEFAULT_MEMORY_BUDGET
    from circuitdiff.sweep.jobs import RunSettings
    from circuitdiff.sweep.merge import JOBS_TABLE, SUMMARY_HTML, SUMMARY_MD
    from circuitdiff.resources import parse_memory
    from circuitdiff.sweep.runner import run_sweep
    from circuitdiff.sweep.spec import load_sweep

    from circuitdiff.compare import make_out_folder

    spec = load_sweep(sweep_file)
    make_out_folder(out)
    check_settings(backend, device, dtype, device_map)
    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else parse_memory(max_memory) or 0
    settings = RunSettings(device=device, dtype=dtype, device_map=device_map, memory_budget=budget,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, resume=resume)
    console = Console(stderr=True)
    console.print(f"sweep [bold]{spec.name}[/]: {len(spec.jobs())} jobs on the {backend} backend", highlight=False)
    outcome = run_sweep(spec, out, settings, backend, address=address, cpus_per_job=cpus_per_job,
                        gpus_per_job=gpus_per_job, echo=lambda msg: console.print(msg, highlight=False, markup=False))
    console.print(f"merged {len(outcome.jobs)} jobs in {outcome.seconds:.1f} s: {outcome.out / JOBS_TABLE}, "
                  f"{outcome.out / SUMMARY_MD}, {outcome.out / SUMMARY_HTML}", highlight=False, markup=False)
