"""``circuitdiff lab ...``: train a teacher, distil a student, rebuild the built-in pairs.

Mounted by the main CLI as a Typer sub-app. Bad input raises ``LabError`` (a
``CircuitDiffError``), which the main CLI prints as one line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from circuitdiff.lab.errors import LabError
from circuitdiff.lab.evaluate import brief
from circuitdiff.lab.recipe import ALL_TASKS, DataRecipe, DistillRecipe, OptimRecipe, TeacherRecipe, check_kind

app = typer.Typer(help="Train tiny teachers from scratch; distil depth-pruned students from any supported teacher "
                  "(the DistilGPT2/DistilBERT recipe).", no_args_is_help=True)


def parse_ints(text: str | None, what: str) -> tuple[int, ...] | None:
    """'0,2,4' -> (0, 2, 4); None stays None."""
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LabError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_tasks(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """'ioi:12000,numerals' -> (("ioi", "numerals"), (("ioi", 12000),)), checked against the built-ins.

    'none' trains on the corpus alone: a student then learns the tasks only through its teacher.
    """
    if text.strip() == "none":
        return (), ()
    names: list[str] = []
    counts: list[tuple[str, int]] = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, count = item.partition(":")
        if name not in ALL_TASKS:
            raise LabError(f"unknown training task {name!r}; choose from {', '.join(ALL_TASKS)}")
        names.append(name)
        if count:
            if not count.isdigit() or int(count) < 1:
                raise LabError(f"task prompt count must be a positive integer, got {item!r}")
            counts.append((name, int(count)))
    if not names:
        raise LabError("no training tasks given (write 'none' to train on the corpus alone)")
    return tuple(names), tuple(counts)


DEFAULT_TASKS = ",".join(
    f"{t}:{dict(DataRecipe().task_prompts)[t]}" if t in dict(DataRecipe().task_prompts) else t for t in ALL_TASKS
)
TASKS_HELP = "Comma-separated built-in tasks to mix in, each optionally NAME:PROMPTS; 'none' for the corpus alone."
THREADS_HELP = "Torch threads while training; 1 is fastest for tiny models on a busy machine, more for big ones."


def _data(corpus: str, tasks: str, prompts_per_task: int) -> DataRecipe:
    if prompts_per_task < 1:
        raise LabError(f"prompts-per-task must be positive, got {prompts_per_task}")
    names, counts = parse_tasks(tasks)
    return DataRecipe(corpus=corpus, tasks=names, task_prompts_per_task=prompts_per_task, task_prompts=counts)


def _print_eval(report: dict) -> None:
    """Accuracy per task (teacher's beside the student's when known) and the training cost."""
    teacher = report.get("teacher_evaluation", {})
    for task, r in report.get("evaluation", {}).items():
        if "error" in r:
            typer.echo(f"  {task:16s} n/a: {brief(r['error'])}")
            continue
        metric = "mean log-prob diff" if r.get("multi_token") else "mean logit diff"
        line = f"accuracy {100 * r['accuracy']:5.1f}%  {metric} {r['mean_logit_diff']:6.2f}"
        if "accuracy" in teacher.get(task, {}):
            line += f"   (teacher {100 * teacher[task]['accuracy']:5.1f}%, {teacher[task]['mean_logit_diff']:6.2f})"
        typer.echo(f"  {task:16s} {line}")
    cost = report.get("cost_per_1k_tokens")
    if cost:
        typer.echo(f"  cost per 1,000 training tokens: {cost['wall_s']:.2f} s wall, {cost['cpu_s']:.2f} s CPU")


@app.command("train-teacher")
def train_teacher_cmd(
    out_dir: Path = typer.Argument(..., help="Folder for the model (resumes a checkpoint found there)."),
    kind: str = typer.Option("causal", help="causal (GPT-2) or masked (BERT)."),
    n_layers: int = typer.Option(6), d_model: int = typer.Option(128), n_heads: int = typer.Option(4),
    d_mlp: int = typer.Option(512), context: int = typer.Option(64), vocab_size: int = typer.Option(3000),
    steps: int = typer.Option(2000), batch_size: int = typer.Option(32), lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    corpus: str = typer.Option("sample", help="'sample', 'janeaustenr', or a folder of .txt files."),
    tasks: str = typer.Option(DEFAULT_TASKS, help=TASKS_HELP),
    prompts_per_task: int = typer.Option(1500, help="Prompts for each task without a NAME:PROMPTS count."),
    threads: int = typer.Option(1, help=THREADS_HELP),
    overwrite: bool = typer.Option(False, help="Replace a finished model in OUT_DIR."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a tokenizer and a GPT-2 or BERT teacher from scratch on corpus + task prompts."""
    from circuitdiff.lab.build import train_teacher

    check_kind(kind)
    recipe = TeacherRecipe(kind=kind, n_layers=n_layers, d_model=d_model, n_heads=n_heads,  # type: ignore[arg-type]
                           d_mlp=d_mlp, context=context, vocab_size=vocab_size, seed=seed,
                           data=_data(corpus, tasks, prompts_per_task),
                           optim=OptimRecipe(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(100, steps // 10)))
    result = train_teacher(recipe, out_dir, overwrite=overwrite, progress=progress, threads=threads)
    typer.echo(f"teacher saved to {result.out_dir}")
    _print_eval(result.report)


@app.command("distil")
def distil_cmd(
    teacher: str = typer.Argument(..., help="Teacher: a folder made by train-teacher, a built-in name "
                                  "(tiny-gpt2, smollm2-135m, ...), a model folder, a folder/file.gguf or a Hub id."),
    out_dir: Path = typer.Argument(..., help="Folder for the student (resumes a checkpoint found there)."),
    layers: str | None = typer.Option(None, help="Teacher layers that seed the student, e.g. 0,2,4 (default: every other)."),
    alpha_kl: float = typer.Option(5.0, help="Weight of the soft-target KL loss."),
    alpha_lm: float = typer.Option(2.0, help="Weight of the LM loss (causal LM or MLM)."),
    alpha_cos: float = typer.Option(1.0, help="Weight of the hidden-state cosine loss."),
    temperature: float = typer.Option(2.0),
    steps: int = typer.Option(1500), batch_size: int = typer.Option(32), lr: float = typer.Option(5e-4),
    seed: int = typer.Option(0),
    corpus: str = typer.Option("sample"), tasks: str = typer.Option(DEFAULT_TASKS, help=TASKS_HELP),
    prompts_per_task: int = typer.Option(1500),
    threads: int = typer.Option(1, help=THREADS_HELP),
    save_every: int | None = typer.Option(None, min=1, help="Keep the student every N steps (and at step 0 and the "
                                          "end) as model folders OUT_DIR/checkpoints/step-NNNNNN, for "
                                          "'circuitdiff trajectory'."),
    alpha_circuit: float = typer.Option(0.0, help="Weight of the circuit loss: mean 1 - linear CKA between each "
                                        "task-carrying student component and its matched teacher component."),
    circuit_refresh: int = typer.Option(0, min=0, help="Steps between re-choosing the circuit loss's pairs "
                                        "(0: chosen once, on the initial student)."),
    circuit_tasks: str = typer.Option("ioi,numerals,successor", help="Tasks whose influence and matching choose "
                                      "the circuit loss's pairs."),
    circuit_min_share: float = typer.Option(0.05, help="Least share of a task's influence for a student component "
                                            "to be held to its match by the circuit loss."),
    overwrite: bool = typer.Option(False), progress: bool = typer.Option(True),
) -> None:
    """Distil a student from a teacher: KL(T) + LM + hidden-state cosine (+ circuit loss), weights configurable.

    GPT-2 and Llama-family teachers (SmolLM2 from its GGUF file, for one) give a depth-pruned
    student of their own class; BERT gives a DistilBERT.
    """
    from circuitdiff.lab.build import distil

    optim = OptimRecipe(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(100, steps // 10))
    if save_every is not None:
        optim = replace(optim, save_every=save_every)
    recipe = DistillRecipe(layers=parse_ints(layers, "layers"), alpha_kl=alpha_kl, alpha_lm=alpha_lm,
                           alpha_cos=alpha_cos, temperature=temperature, seed=seed,
                           data=_data(corpus, tasks, prompts_per_task), optim=optim, alpha_circuit=alpha_circuit,
                           circuit_refresh=circuit_refresh, circuit_tasks=parse_tasks(circuit_tasks)[0],
                           circuit_min_share=circuit_min_share)
    result = distil(teacher, recipe, out_dir, overwrite=overwrite, progress=progress, threads=threads,
                    snapshots=save_every is not None)
    typer.echo(f"student saved to {result.out_dir}")
    _print_eval(result.report)


@app.command("build-pairs")
def build_pairs_cmd(
    out_dir: Path = typer.Argument(..., help="Where to write the four model folders and index.json."),
    quick: bool = typer.Option(False, help="Toy sizes and few steps: checks the recipe end to end in about a minute."),
    progress: bool = typer.Option(True),
) -> None:
    """Rebuild the built-in pairs (tiny-gpt2/tiny-distilgpt2, tiny-bert/tiny-distilbert) with fixed seeds."""
    from circuitdiff.lab.pairs import build_pairs

    summary = build_pairs(out_dir, quick=quick, progress=progress)
    typer.echo(json.dumps(summary, indent=2))
