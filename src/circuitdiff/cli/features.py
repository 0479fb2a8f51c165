"""``circuitdiff features``: the command line of ``circuitdiff.features`` (mounted by ``cli.main``; torch is imported
only when the command runs, so ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

MODEL_FORMS = "built-in name (tiny-gpt2, smollm2-135m, ...), local folder, folder/file.gguf or Hugging Face id."


def features_cmd(
    teacher: Optional[str] = typer.Option(None, help=f"Teacher: {MODEL_FORMS}"),
    student: Optional[str] = typer.Option(None, help=f"Student: {MODEL_FORMS}"),
    pair: Optional[str] = typer.Option(None, help="A built-in pair (default tiny-gpt2 when no models are given)."),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Built-in task name or JSONL file; repeatable."),
    out: Path = typer.Option(Path("circuitdiff-features"), help="Output folder."),
    site: Optional[str] = typer.Option(None, help="teacher:L,student:L (block outputs); default: the teacher block "
                                       "at 2/3 depth and the student block the layer-CKA matches to it."),
    corpus: str = typer.Option("sample", help="Text: 'sample' (the lab's built-in Austen), 'janeaustenr', "
                               "a .txt(.gz) file or a folder of .txt files."),
    n_latents: int = typer.Option(1024, min=8, help="Dictionary size."),
    k: int = typer.Option(16, min=1, help="Active latents per token (BatchTopK)."),
    n_tokens: int = typer.Option(400_000, min=1000, help="Training tokens (the corpus is reread when shorter)."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Adam learning rate; default 2e-3 up to 128-wide "
                                       "streams, falling as 1/width above (4.4e-4 for SmolLM2's 576)."),
    n_prompts: int = typer.Option(64, min=4, help="Prompts per built-in task."),
    top: int = typer.Option(20, min=1, help="Latents per model and task that get exact ablations."),
    seed: int = typer.Option(0, help="Seed for the dictionary, the data order and the tasks."),
    device: str = typer.Option("auto", help="torch device; auto = cuda when available, else cpu."),
    threads: int = typer.Option(1, min=1, help="Torch threads on CPU; 1 is fastest for the tiny pairs on a busy "
                                "machine (2 threads took 4x the CPU time), more for big models on free cores."),
) -> None:
    """Train a BatchTopK crosscoder on both models at matched sites: shared, dropped and invented features."""
    import torch

    from circuitdiff.features.run import FeatureOptions, features, parse_site
    from circuitdiff.lab.train import torch_threads
    from circuitdiff.pairs_index import resolve_pair
    from circuitdiff.resources import check_device

    teacher_layer, student_layer = parse_site(site)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    check_device(device, None)
    t_name, s_name, default_tasks = resolve_pair(pair, teacher, student)
    options = FeatureOptions(n_latents=n_latents, k=min(k, n_latents), n_tokens=n_tokens, lr=lr, n_prompts=n_prompts,
                             top=top, seed=seed, corpus=corpus, teacher_layer=teacher_layer,
                             student_layer=student_layer)
    console = Console(stderr=True)
    with torch_threads(threads):
        result = features(t_name, s_name, task or default_tasks, out, options, device=device, progress=console.print)
    s = result.summary
    show = Console()
    show.print(f"latents: {s['n_latents']}  " + "  ".join(f"{c}: {n}" for c, n in s["counts"].items()))
    show.print(f"FVE teacher {s['fve']['teacher']:.3f}, student {s['fve']['student']:.3f}; L0 {s['l0']:.1f}")
    if s["reconstruction_problem"]:
        console.print(f"warning: {s['reconstruction_problem']}")
    for name, t in s["tasks"].items():
        show.print(f"{name}: metric clean/spliced teacher {t['clean']['teacher']:.3f}/{t['spliced']['teacher']:.3f}, "
                   f"student {t['clean']['student']:.3f}/{t['spliced']['student']:.3f}")
        show.print(t["headline"]["text"])
    show.print(f"wrote {out}/features.parquet, features.json, features.html ({s['settings']['seconds']:.0f} s)")
