"""The built-in teacher/student pairs: their recipes, ``build_pairs`` and ``pairs/index.json``.

``build_pairs(out, quick=True)`` runs the same code path with toy sizes and a few dozen
steps, so CI can check the whole recipe end to end in about a minute.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from circuitdiff.lab.build import distil, train_teacher
from circuitdiff.lab.recipe import DataRecipe, DistillRecipe, Kind, OptimRecipe, TeacherRecipe

PAIRS_DIR = Path(__file__).resolve().parent.parent / "pairs"
INDEX_FILE = "index.json"
REQUIRED_TASKS = ("ioi", "numerals")
"""Tasks every built-in pair is built to do: teacher >= 90%, student >= 80% accuracy."""
TEACHER_FLOOR, STUDENT_FLOOR = 0.9, 0.8
CAUSAL_TASK_PROMPTS: tuple[tuple[str, int], ...] = (
    ("ioi", 12000), ("induction", 12000), ("numerals", 4000), ("greater-than", 2000), ("facts", 6000),
)


@dataclass(frozen=True)
class PairSpec:
    """One built-in pair: folder names, kind and the two recipes."""

    name: str
    teacher: str
    student: str
    kind: Kind
    teacher_recipe: TeacherRecipe
    distill_recipe: DistillRecipe


def pair_specs(quick: bool = False) -> list[PairSpec]:
    """Recipes of the shipped pairs; ``quick`` shrinks them to a smoke test of the same code."""
    specs = []
    for name, teacher, student, kind in (
        ("tiny-gpt2", "tiny-gpt2", "tiny-distilgpt2", "causal"),
        ("tiny-bert", "tiny-bert", "tiny-distilbert", "masked"),
    ):
        t, d = TeacherRecipe(kind=kind), DistillRecipe()
        if kind == "causal":  # a causal model must grow induction heads: more induction data, more steps
            data = replace(t.data, task_prompts=CAUSAL_TASK_PROMPTS)
            t = replace(t, data=data, optim=replace(t.optim, steps=2500))
            d = replace(d, data=data)
        if quick:
            data = DataRecipe(task_prompts_per_task=100, task_prompts=(), corpus_max_chunks=400)
            t = replace(t, n_layers=2, d_model=32, n_heads=2, d_mlp=64, vocab_size=1000, data=data,
                        optim=OptimRecipe(steps=30, warmup_steps=5, save_every=10))
            d = replace(d, data=data, optim=OptimRecipe(steps=20, warmup_steps=5, save_every=10))
        specs.append(PairSpec(name, teacher, student, kind, t, d))  # type: ignore[arg-type]
    return specs


def passed_tasks(teacher_eval: dict[str, Any], student_eval: dict[str, Any]) -> list[str]:
    """Required tasks, then every other task both models pass (teacher >= 90%, student >= 80%)."""
    def ok(ev: dict[str, Any], task: str, floor: float) -> bool:
        return ev.get(task, {}).get("accuracy", 0.0) >= floor

    extra = [t for t in teacher_eval if t not in REQUIRED_TASKS
             and ok(teacher_eval, t, TEACHER_FLOOR) and ok(student_eval, t, STUDENT_FLOOR)]
    return [*REQUIRED_TASKS, *extra]


def build_pairs(out_dir: str | Path, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train both teachers and distil both students into ``out_dir``; write ``index.json``.

    Returns the index plus wall times. Finished model folders of the same names are
    replaced; an unfinished one (a ``checkpoint/`` of the same recipe) is resumed, so
    rerunning after an interruption continues where it stopped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eval_prompts = 32 if quick else 256
    index: dict[str, Any] = {}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for spec in pair_specs(quick):
        t0 = time.perf_counter()
        teacher = train_teacher(spec.teacher_recipe, out / spec.teacher, overwrite=True, progress=progress,
                                eval_prompts=eval_prompts, name=spec.teacher)
        timings[spec.teacher] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        student = distil(out / spec.teacher, spec.distill_recipe, out / spec.student, overwrite=True,
                         progress=progress, eval_prompts=eval_prompts, name=spec.student)
        timings[spec.student] = round(time.perf_counter() - t0, 1)
        index[spec.name] = {
            "teacher": spec.teacher, "student": spec.student, "kind": spec.kind,
            # the default job runs the reference study's two tasks, to stay within 2 minutes on 2 cores
            "default_tasks": list(REQUIRED_TASKS),
            "tasks_passed": passed_tasks(teacher.report["evaluation"], student.report["evaluation"]),
        }
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return {"index": index, "wall_time_s": timings, "total_wall_time_s": round(time.perf_counter() - start, 1)}


def load_index(pairs_dir: str | Path = PAIRS_DIR) -> dict[str, Any]:
    """The pair index of a pairs folder (default: the pairs shipped with circuitdiff)."""
    return json.loads((Path(pairs_dir) / INDEX_FILE).read_text())
