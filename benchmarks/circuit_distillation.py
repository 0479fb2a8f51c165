"""The experiment of issue 15: plain distillation against circuit-preserving distillation.

Same teacher (the shipped tiny-gpt2), same recipe as the shipped tiny-distilgpt2 (data,
steps, optimiser), same seeds; only ``alpha_circuit`` differs. Each run keeps its student
every steps/6 steps; the teacher is compared with its checkpoints at 0, steps/2 and steps
(``fill``: all) (``circuitdiff trajectory``) on ioi, numerals, successor and facts.

    python benchmarks/circuit_distillation.py run --out runs/cpd          # everything, resumable
    python benchmarks/circuit_distillation.py summarise --out runs/cpd    # table + figure

The SmolLM2-135M arm (``smollm2``): the docs/smollm2.md distillation (batch 16, lr 3e-4,
the word-numeral tasks, here with facts) at ``--steps``, plain against each weight, one
seed; trajectories on successor and facts (the tasks SmolLM2's tokenizer keeps).

    python benchmarks/circuit_distillation.py smollm2 --out runs/cpd-smollm2 --steps 200 --weights 10
    python benchmarks/circuit_distillation.py summarise --out runs/cpd-smollm2 --seeds 0 --weights 10 --smollm2

``run`` goes seed by seed (plain, then each weight), so a run stopped early leaves every
recipe with the same seeds done. Finished students and finished checkpoint comparisons
are skipped on a rerun. Single-threaded, one job at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

TASKS = ("ioi", "numerals", "successor", "facts")
TEACHER = "tiny-gpt2"
SMOLLM2 = "smollm2-135m"
SMOLLM2_TASKS = ("successor", "facts")
"""SmolLM2's tokenizer splits numbers and some IOI names, so ioi and numerals are refused with it."""
SMOLLM2_DATA = "successor,numerals-words,numerals-months,induction,facts"
SMOLLM2_KL_TASKS = ("successor", "numerals-words", "numerals-months")
SMOLLM2_TRAJ: dict[str, Any] = {"n_prompts": 32, "n_null": 5, "circuit_thresholds": (0.2,)}
"""A 30-layer teacher: half the prompts of the tiny pair's trajectories."""


SMOKE = False
"""``--smoke``: a few steps and small comparisons, to check this script end to end in minutes."""


STEPS = 1500
"""Training steps (the shipped recipe's 1500 unless ``--steps``); warm-up as the CLI sets it, min(100, steps/10)."""
TRAJ_OPTIONS: dict[str, Any] = {"n_null": 5, "circuit_thresholds": (0.2,)}
"""The trajectory's comparison: defaults but 5 random students and one circuit threshold (half the cost)."""


def recipe_for(alpha: float, seed: int) -> Any:
    """The shipped tiny-distilgpt2 recipe, with this seed, circuit weight and step count; snapshots every STEPS/6."""
    from circuitdiff.lab.card import read_report
    from circuitdiff.lab.pairs import PAIRS_DIR
    from circuitdiff.lab.recipe import distill_from_dict

    shipped = distill_from_dict(read_report(PAIRS_DIR / "tiny-distilgpt2")["recipe"])
    optim = replace(shipped.optim, steps=STEPS, warmup_steps=min(100, STEPS // 10), save_every=max(1, STEPS // 6))
    if SMOKE:
        optim = replace(optim, steps=4, save_every=2, batch_size=8, warmup_steps=1)
    return replace(shipped, seed=seed, alpha_circuit=alpha, circuit_tasks=TASKS, circuit_refresh=0, optim=optim)


def run_name(alpha: float, seed: int) -> str:
    return f"{'kd' if alpha == 0 else f'circuit-{alpha:g}'}-seed{seed}"


def kl_to_teacher(student_dir: Path, teacher: str = TEACHER, tasks: tuple[str, ...] = TASKS) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 over every real token of the
    256 evaluation prompts of each task (held out from training by the lab's seed streams)."""
    import torch
    import torch.nn.functional as F

    from circuitdiff.models.loading import load_model
    from circuitdiff.tasks import encode_task, get_task

    loaded = load_model(teacher)
    model, tok, student = loaded.model, loaded.tokenizer, load_model(str(student_dir)).model
    total, count = 0.0, 0
    with torch.no_grad():
        for name in tasks:
            enc = encode_task(get_task(name, 256, 0), tok)
            for rows in torch.arange(enc.n).split(16):  # a 49k vocabulary in float64: 16 prompts at a time
                ids, mask = enc.input_ids[rows], enc.attention_mask[rows]
                t = model(input_ids=ids, attention_mask=mask).logits.double()
                s = student(input_ids=ids, attention_mask=mask).logits.double()
                keep = mask.bool()
                kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1)
                total, count = total + float(kl[keep].sum()), count + int(keep.sum())
    return total / count


def trajectory(run_dir: Path, steps: tuple[int, ...] | None, shared: Any = None, tasks: tuple[str, ...] = TASKS,
               options: dict[str, Any] | None = None) -> Any:
    """The run's trajectory; ``shared`` (a ``SharedRuns``) reuses the teacher's runs and random students across runs."""
    from circuitdiff.lab.checkpoint import snapshot_folder
    from circuitdiff.options import CompareOptions
    from circuitdiff.trajectory.report import write_trajectory_report
    from circuitdiff.trajectory.run import run_trajectory

    folders = [str(snapshot_folder(run_dir, s)) for s in steps] if steps else [str(run_dir)]
    out = run_dir / "trajectory"
    chosen = CompareOptions(n_prompts=8, n_boot=50, n_null=2) if SMOKE else CompareOptions(**(options or TRAJ_OPTIONS))
    teacher = shared.teacher.name if shared is not None else TEACHER
    table = run_trajectory(teacher, folders, list(tasks), out, chosen, progress=False, shared=shared)
    write_trajectory_report(table, out, f"Trajectory: {teacher} vs {run_dir.name}")
    return table


def run(out: Path, seeds: list[int], weights: list[float], full: bool) -> None:
    import torch

    from circuitdiff.lab.build import distil
    from circuitdiff.models.loading import load_model
    from circuitdiff.shared_runs import SharedRuns

    torch.set_num_threads(1)
    shared = SharedRuns(load_model(TEACHER))  # the teacher's runs and the random students, for every run
    for seed in seeds:
        for alpha in [0.0, *weights]:
            folder = out / run_name(alpha, seed)
            t0 = time.perf_counter()
            if not (folder / "lab_report.json").is_file():
                distil(TEACHER, recipe_for(alpha, seed), folder, progress=False, snapshots=True, threads=1,
                       eval_prompts=16 if SMOKE else 128)
                info = {"kl_to_teacher": kl_to_teacher(folder)}
                (folder / "experiment.json").write_text(json.dumps(info) + "\n")
            t1 = time.perf_counter()
            trajectory(folder, None if full else ((0, 2, 4) if SMOKE else (0, STEPS // 2, STEPS)), shared)
            print(f"{folder.name}: distil {t1 - t0:.0f} s, trajectory {time.perf_counter() - t1:.0f} s", flush=True)


def smollm2(out: Path, weights: list[float]) -> None:
    """The SmolLM2-135M arm: each recipe distilled by the CLI (as a user would), then its trajectory and KL."""
    import subprocess

    import torch

    from circuitdiff.models.loading import load_model
    from circuitdiff.shared_runs import SharedRuns

    torch.set_num_threads(1)
    for alpha in [0.0, *weights]:
        folder = out / run_name(alpha, 0)
        if not (folder / "lab_report.json").is_file():
            extra = ["--alpha-circuit", f"{alpha:g}", "--circuit-tasks", ",".join(SMOLLM2_TASKS)] if alpha else []
            subprocess.run([sys.executable, "-m", "circuitdiff.cli.main", "lab", "distil", SMOLLM2, str(folder),
                            "--steps", str(STEPS), "--batch-size", "16", "--lr", "3e-4", "--threads", "1",
                            "--save-every", str(max(1, STEPS // 2)), "--seed", "0", "--tasks", SMOLLM2_DATA,
                            "--no-progress", *extra], check=True)
        if not (folder / "experiment.json").is_file():
            info = {"kl_to_teacher": kl_to_teacher(folder, SMOLLM2, SMOLLM2_KL_TASKS)}
            (folder / "experiment.json").write_text(json.dumps(info) + "\n")
    shared = SharedRuns(load_model(SMOLLM2))
    for alpha in [0.0, *weights]:
        t0 = time.perf_counter()
        # every recipe starts from the same student (teacher layers, seed 0): step 0 is compared once, in plain KD's
        steps = None if alpha == 0 else (STEPS // 2, STEPS)
        trajectory(out / run_name(alpha, 0), steps, shared, SMOLLM2_TASKS, SMOLLM2_TRAJ)
        print(f"{run_name(alpha, 0)}: trajectory {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    global SMOKE, STEPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "fill", "smollm2", "summarise"))
    parser.add_argument("--out", type=Path, default=Path("runs/circuit-distillation"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--weights", default="1,5", help="alpha_circuit values besides plain KD (0)")
    parser.add_argument("--smoke", action="store_true", help="4 steps, small comparisons: checks the script")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (shipped recipe: 1500)")
    parser.add_argument("--smollm2", action="store_true", help="summarise: the SmolLM2 arm's tasks")
    args = parser.parse_args()
    SMOKE, STEPS = args.smoke, args.steps
    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    if args.action == "summarise":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from circuit_distillation_summary import summarise

        summarise(args.out, seeds, weights, SMOLLM2_TASKS if args.smollm2 else TASKS)
    elif args.action == "smollm2":
        smollm2(args.out, weights)
    else:
        run(args.out, seeds, weights, full=args.action == "fill")


if __name__ == "__main__":
    main()
