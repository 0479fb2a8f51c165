"""Tables and the trajectory figure of the circuit-preserving distillation experiment.

Reads only what ``circuit_distillation.py run`` wrote: each run's ``lab_report.json``,
``experiment.json`` (KL to the teacher) and ``trajectory/trajectory.parquet``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuit_distillation import run_name

FIGURE = "circuit-distillation-trajectory.svg"


def run_rows(out: Path, seeds: list[int], weights: list[float]) -> pd.DataFrame:
    """One row per finished run and task: its last compared checkpoint, KL, cost."""
    rows = []
    for alpha in [0.0, *weights]:
        for seed in seeds:
            folder = out / run_name(alpha, seed)
            table_file = folder / "trajectory" / "trajectory.parquet"
            if not (folder / "experiment.json").is_file() or not table_file.is_file():
                continue
            report = json.loads((folder / "lab_report.json").read_text())
            kl = json.loads((folder / "experiment.json").read_text())["kl_to_teacher"]
            table = pd.read_parquet(table_file)
            final = table[table["step"] == table["step"].max()]
            for _, r in final.iterrows():
                rows.append({"recipe": "plain KD" if alpha == 0 else f"circuit {alpha:g}", "alpha": alpha,
                             "seed": seed, "task": r["task"], "step": int(r["step"]), "alignment": r["alignment"],
                             "lo": r["alignment_lo"], "hi": r["alignment_hi"], "null": r["null"],
                             "verdict": r["verdict"], "accuracy": r["student_accuracy"],
                             "teacher_accuracy": r["teacher_accuracy"], "kl": kl,
                             "eff_student": r["student_effective_number"], "eff_teacher": r["teacher_effective_number"],
                             "overlap": r["circuit_overlap"],
                             "cost_wall_s": report["cost_per_1k_tokens"]["wall_s"],
                             "cost_cpu_s": report["cost_per_1k_tokens"]["cpu_s"],
                             "final_circuit_loss": report["last_losses"].get("circuit"),
                             "analysis_s": sum(c.get("seconds", 0.0) for c in
                                               report.get("circuit_loss", {}).get("choices", []))})
    return pd.DataFrame(rows)


def markdown(rows: pd.DataFrame) -> str:
    """The per-run table and the per-recipe spread (mean and sd over seeds)."""
    lines = ["| recipe | seed | task | final alignment [95% CI] | null | verdict | accuracy | KL to teacher | "
             "effective no. student / teacher | circuit overlap | cost / 1k tokens (wall s, CPU s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['task']} | {r['alignment']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] "
                     f"| {r['null']:.3f} | {r['verdict']} | {100 * r['accuracy']:.1f}% | {r['kl']:.5f} | "
                     f"{r['eff_student']:.1f} / {r['eff_teacher']:.1f} | {r['overlap']:.2f} | "
                     f"{r['cost_wall_s']:.2f}, {r['cost_cpu_s']:.2f} |")
    agg = rows.groupby(["recipe", "task"], sort=False).agg(
        n=("seed", "count"), mean=("alignment", "mean"), sd=("alignment", "std"), lo=("alignment", "min"),
        hi=("alignment", "max"), acc=("accuracy", "mean"), kl=("kl", "mean"), cost=("cost_cpu_s", "mean"))
    lines += ["", "| recipe | task | seeds | final alignment mean (sd) [min, max] | mean accuracy | mean KL | "
              "mean CPU s / 1k tokens |", "|---|---|---|---|---|---|---|"]
    for (recipe, task), r in agg.iterrows():
        sd = "n/a" if np.isnan(r["sd"]) else f"{r['sd']:.3f}"
        lines.append(f"| {recipe} | {task} | {int(r['n'])} | {r['mean']:.3f} ({sd}) [{r['lo']:.3f}, {r['hi']:.3f}] | "
                     f"{100 * r['acc']:.1f}% | {r['kl']:.5f} | {r['cost']:.2f} |")
    return "\n".join(lines) + "\n"


def figure(out: Path, seeds: list[int], weights: list[float], path: Path, tasks: tuple[str, ...]) -> None:
    """Alignment, student effective number and accuracy against step: one line per run, colour per recipe."""
    from circuitdiff.report.svg import figure_svg, new_figure

    fig = new_figure(2.7 * len(tasks) + 0.6, 6.0)
    axes = fig.subplots(3, len(tasks), sharex=True, squeeze=False)
    for colour, alpha in enumerate([0.0, *weights]):
        for seed in seeds:
            table_file = out / run_name(alpha, seed) / "trajectory" / "trajectory.parquet"
            if not table_file.is_file():
                continue
            table = pd.read_parquet(table_file)
            for col, task in enumerate(tasks):
                rows = table[table["task"] == task].sort_values("step")
                label = ("plain KD" if alpha == 0 else f"circuit {alpha:g}") if seed == seeds[0] else None
                for ax, key in zip(axes[:, col], ("alignment", "student_effective_number", "student_accuracy")):
                    ax.plot(rows["step"], rows[key], "o-", color=f"C{colour}", markersize=2.5, linewidth=1,
                            alpha=0.8, label=label)
                axes[1, col].plot(rows["step"], rows["teacher_effective_number"], color="0.5", linestyle="--",
                                  linewidth=0.8)
                axes[0, col].set_title(task)
    for ax, name in zip(axes[:, 0], ("alignment", "student effective\nno. of components", "student accuracy")):
        ax.set_ylabel(name)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend(fontsize=7, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(figure_svg(fig, "cpd"), encoding="utf-8")


def summarise(out: Path, seeds: list[int], weights: list[float], tasks: tuple[str, ...]) -> dict[str, Any]:
    rows = run_rows(out, seeds, weights)
    rows.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(rows))
    figure(out, seeds, weights, out / FIGURE, tasks)
    print((out / "summary.md").read_text())
    return {"runs": len(rows)}
