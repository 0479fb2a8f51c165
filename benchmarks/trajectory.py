"""A trajectory's cost: checkpoints sharing the teacher's runs and the random students, against plain compares.

A short lab run of the shipped tiny GPT-2 pair keeps K checkpoints; the teacher (loaded
once for both sides) is compared with each of them (a) by ``run_trajectory``, which runs
the teacher and the null once per task, and (b) by one plain ``compare`` per checkpoint.
Both sides use the default comparison (64 prompts, exact effects, circuits at three
thresholds, 10 random students, 1000 resamples) and must give the same numbers.

    python benchmarks/trajectory.py [--checkpoints 5] [--tasks ioi,numerals]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import common  # puts src/ on the path; one_thread_scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--tasks", default="ioi,numerals")
    args = parser.parse_args()
    from circuitdiff.compare import compare
    from circuitdiff.lab.build import distil
    from circuitdiff.lab.card import read_report
    from circuitdiff.lab.pairs import PAIRS_DIR
    from circuitdiff.lab.recipe import distill_from_dict
    from circuitdiff.models.loading import load_model
    from circuitdiff.options import CompareOptions
    from circuitdiff.trajectory import find_checkpoints, run_trajectory

    tasks = args.tasks.split(",")
    work = common.one_thread_scratch("trajectory")
    shipped = distill_from_dict(read_report(PAIRS_DIR / "tiny-distilgpt2")["recipe"])
    steps = 10 * (args.checkpoints - 1)
    recipe = replace(shipped, optim=replace(shipped.optim, steps=steps, warmup_steps=1, save_every=10))
    distil("tiny-gpt2", recipe, work / "run", progress=False, snapshots=True, threads=1, eval_prompts=8)
    checkpoints = find_checkpoints([work / "run"])
    teacher, options = load_model("tiny-gpt2"), CompareOptions()

    t0 = time.perf_counter()
    plain = [compare(teacher, str(c.folder), tasks, options, out=work / "plain" / c.label, progress=False,
                     report=False) for c in checkpoints]
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = run_trajectory(teacher, [work / "run"], tasks, work / "traj", options, progress=False)
    t_shared = time.perf_counter() - t0

    expected = [r["tasks"][t]["alignment"]["score"] for r in plain for t in tasks]
    diff = max(abs(a - b) for a, b in zip(expected, table["alignment"]))
    print(f"{len(checkpoints)} checkpoints x {len(tasks)} tasks: plain compares {t_plain:.1f} s, "
          f"trajectory {t_shared:.1f} s")
    print(f"RATIOS trajectory_vs_plain_compares={t_plain / t_shared:.2f}x max_alignment_diff={diff:.1e}")


if __name__ == "__main__":
    main()
