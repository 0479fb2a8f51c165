"""``circuitdiff reproduce``: the reference study's protocol, with the published figures beside ours.

Mounted on the main CLI by ``cli/main.py``. Everything that can be checked without a model
(the pair set, the subset options, the folders, the device) is checked first, so a mistake
is one line and exit 2; ``--dry-run`` prints the plan and stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from circuitdiff.errors import CircuitDiffError

if TYPE_CHECKING:
    from rich.console import Console

    from circuitdiff.reproduce.plan import Plan, StudyPair

THRESHOLDS = "0.1,0.15,0.2,0.25,0.3"


def _pairs(which: str, model_root: Optional[Path],
           smollm2_student: Optional[Path]) -> tuple[list[StudyPair], list[tuple[str, str]]]:
    """The pair set's pairs and the (pair, reason) of those that cannot run here."""
    from circuitdiff.reproduce.plan import PAIR_SETS, builtin_study_pairs, study_pairs

    if which not in PAIR_SETS:
        raise CircuitDiffError(f"unknown pair set '{which}'; choose one of {', '.join(PAIR_SETS)}")
    if which == "study":
        if smollm2_student is not None:
            raise CircuitDiffError("--smollm2-student belongs to --pairs builtin")
        if model_root is not None and not model_root.is_dir():
            raise CircuitDiffError(f"--model-root '{model_root}' is not a folder")
        return study_pairs(model_root.resolve() if model_root else None), []
    if model_root is not None:
        raise CircuitDiffError("--model-root belongs to --pairs study (the built-in pairs ship with circuitdiff)")
    if smollm2_student is not None and not smollm2_student.exists():
        raise CircuitDiffError(f"--smollm2-student '{smollm2_student}' does not exist")
    return builtin_study_pairs(str(smollm2_student.resolve()) if smollm2_student else None)


def reproduce(
    pairs: str = typer.Option("builtin", help="builtin (the shipped pairs, SmolLM2 when given a student) | study "
                              "(the study's Hub models)."),
    out: Path = typer.Option(Path("circuitdiff-reproduce"), help="Output folder: jobs/, reproduce.{csv,parquet,md,html}."),
    n_prompts: int = typer.Option(64, min=2, help="Prompts per task (facts: all 249 facts, or more)."),
    seed: int = typer.Option(0, help="Seed for tasks, resampling and bootstrap."),
    n_boot: int = typer.Option(1000, min=10, help="Bootstrap resamples for intervals."),
    n_null: int = typer.Option(10, min=0, help="Random students behind the chance level (0: none, no verdict)."),
    thresholds: str = typer.Option(THRESHOLDS, help="Circuit pruning thresholds (the study's sweep 0.10-0.30)."),
    only: Optional[list[str]] = typer.Option(None, help="Run only this pair (repeatable; names in --dry-run)."),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Only this study task: ioi | numerals | facts."),
    ablation: Optional[list[str]] = typer.Option(None, help="Only this ablation: mean | zero."),
    model_root: Optional[Path] = typer.Option(None, help="--pairs study: load each Hub id from DIR/<id> (or "
                                              "DIR/<name>) where that folder exists."),
    smollm2_student: Optional[Path] = typer.Option(None, help="--pairs builtin: a student distilled from smollm2-135m."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option("float32", help="Weights dtype (the Llama pair always runs in bfloat16)."),
    device_map: Optional[str] = typer.Option(None, help="'auto': shard models (the Llama pair always does)."),
    max_memory: Optional[str] = typer.Option(None, help="Activation memory per forward pass, e.g. 4GB or auto."),
    resume: bool = typer.Option(True, help="Reuse jobs an earlier reproduce into OUT finished."),
    report: bool = typer.Option(True, help="Write each job's report.html."),
    dry_run: bool = typer.Option(False, help="Print the plan and stop (no model is loaded)."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (unsafe: runs code from the file)."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the checkpoints' repositories."),
) -> None:
    """Run the reference study's protocol and write its figures beside the published ones."""
    from rich.console import Console

    from circuitdiff.cli.parsing import parse_thresholds
    from circuitdiff.compare import make_out_folder
    from circuitdiff.interventions.choices import DEFAULT_MEMORY_BUDGET
    from circuitdiff.options import CompareOptions
    from circuitdiff.reproduce.plan import make_plan
    from circuitdiff.reproduce.run import TABLE_HTML, TABLE_MD, run_plan
    from circuitdiff.resources import check_device, parse_dtype, parse_memory
    from circuitdiff.sweep.jobs import RunSettings

    found, skipped = _pairs(pairs, model_root, smollm2_student)
    cuts = parse_thresholds(thresholds)
    CompareOptions(n_prompts=n_prompts, n_boot=n_boot, n_null=n_null, circuit_thresholds=cuts)  # checks the values
    parse_dtype(dtype)
    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else parse_memory(max_memory) or 0
    settings = RunSettings(device=device, dtype=dtype, device_map=device_map, memory_budget=budget,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, resume=resume)
    plan = make_plan(found, settings, seed=seed, n_prompts=n_prompts, n_boot=n_boot, n_null=n_null, thresholds=cuts,
                     only=only, tasks=task, ablations=ablation, skipped=skipped)
    console = Console()
    for name, why in plan.skipped:
        console.print(f"skipped {name}: {why}", highlight=False, markup=False, soft_wrap=True)
    for pair in {rj.pair for rj in plan.jobs if rj.pair.note}:
        console.print(f"{pair.name}: {pair.note}", highlight=False, markup=False, soft_wrap=True)
    if dry_run:
        _print_plan(console, plan)
        return
    make_out_folder(out)
    check_device(device, device_map)  # a pair's own device map (Llama) is checked by its jobs, which fail alone
    outcome = run_plan(plan, out, title=f"circuitdiff reproduce --pairs {pairs}",
                       report=report, echo=lambda msg: console.print(msg, highlight=False, markup=False, soft_wrap=True))
    console.print(f"{outcome.done} jobs run, {outcome.reused} reused, {len(outcome.failed)} failed; table: "
                  f"{out / TABLE_MD}, {out / TABLE_HTML}", highlight=False, markup=False, soft_wrap=True)


def _print_plan(console: Console, plan: Plan) -> None:
    """One line per job: what it compares, on which task, with which ablation, thresholds and settings."""
    console.print(f"plan: {len(plan.jobs)} jobs", highlight=False)
    for rj in plan.jobs:
        d = rj.describe()
        console.print(" ".join(f"{k}={v}" for k, v in d.items()), highlight=False, markup=False, soft_wrap=True)
