"""The training loop shared by teacher training and distillation, with resumable checkpoints.

Everything random is a function of (seed, step): the batch rows, the MLM masking and the
dropout seed. So a run resumed from step k reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from circuitdiff.lab.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint, save_snapshot
from circuitdiff.lab.data import Pool, batches
from circuitdiff.lab.errors import CheckpointError
from circuitdiff.lab.recipe import DataRecipe, Kind, OptimRecipe

LossFn = Callable[[Any, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]
CHECKPOINT_DIR = "checkpoint"


@dataclass
class LoopResult:
    """What a (possibly resumed) run did in total, across all its sessions."""

    steps: int
    tokens: int
    wall_time_s: float
    cpu_time_s: float
    completed: bool
    last_losses: dict[str, float]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore. On a shared machine 1 thread is often
    several times faster than 2: oversubscribed OpenMP threads spin instead of working."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lr_at(step: int, optim: OptimRecipe) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, optim.steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, optim: OptimRecipe) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(0.9, 0.98), eps=1e-8)


def resume_state(out_dir: Path, recipe: dict[str, Any], discard_other: bool = False
                 ) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """(checkpoint folder, trainer state, optimizer state) if ``out_dir`` holds a checkpoint of ``recipe``.

    A checkpoint of another recipe is an error, or is deleted when ``discard_other``.
    """
    folder = find_checkpoint(out_dir / CHECKPOINT_DIR)
    if folder is None:
        return None
    state, opt = load_trainer_state(folder)
    if state.get("recipe") != recipe:
        if discard_other:
            shutil.rmtree(folder)
            return None
        raise CheckpointError(f"{folder} was written by another recipe; use a new output folder, the same options, "
                              "or overwrite")
    return folder, state, opt


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not enabled,
    )


def run_loop(
    model: torch.nn.Module, tokenizer: Any, pool: Pool, kind: Kind, data: DataRecipe, optim: OptimRecipe,
    seed: int, out_dir: Path, recipe: dict[str, Any], loss_fn: LossFn, *,
    resumed: tuple[dict[str, Any], dict[str, Any]] | None = None, stop_at: int | None = None,
    progress: bool = True, description: str = "training", snapshots: bool = False,
) -> LoopResult:
    """Train ``model`` for ``optim.steps`` steps, checkpointing every ``optim.save_every`` steps.

    ``stop_at`` ends the session after that many total steps (with a checkpoint), as an
    interruption would; rerunning with ``resumed`` state continues from there. With
    ``snapshots`` the model is also kept as a model folder at step 0, every ``save_every``
    steps and at the end (``checkpoint.snapshot_folder``), for ``circuitdiff trajectory``.
    """
    optimizer = make_optimizer(model, optim)
    start, tokens, elapsed, cpu, losses = 0, 0, 0.0, 0.0, {}
    if resumed is not None:
        state, opt_state = resumed
        optimizer.load_state_dict(opt_state)
        start, tokens, losses = state["step"], state["tokens"], state.get("losses", {})
        elapsed, cpu = state["wall_time_s"], state.get("cpu_time_s", 0.0)
    end = optim.steps if stop_at is None else min(optim.steps, stop_at)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()

    def checkpoint(step: int) -> None:
        save_checkpoint(out_dir / CHECKPOINT_DIR, model, tokenizer, optimizer, {
            "step": step, "tokens": tokens, "wall_time_s": elapsed + time.perf_counter() - t0,
            "cpu_time_s": cpu + time.process_time() - c0, "losses": losses, "recipe": recipe,
        })

    done, updating = start, False
    if snapshots:
        save_snapshot(out_dir, model, tokenizer, start)  # step 0: the initialisation itself
    with _progress(progress) as bar:
        task_id = bar.add_task(description, total=optim.steps, completed=start, loss="-")
        try:
            for step, batch in batches(pool, kind, tokenizer, data, optim.batch_size, seed, start, end):
                torch.manual_seed(seed * 100_003 + step)  # dropout, if any, depends on the step only
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, optim)
                loss, parts = loss_fn(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                updating = True
                optimizer.step()
                tokens += int(batch["attention_mask"].sum())
                done, updating = step + 1, False
                optimizer.zero_grad(set_to_none=True)
                losses = {"total": round(float(loss.detach()), 5), **{k: round(v, 5) for k, v in parts.items()}}
                bar.update(task_id, completed=done, loss=f"{losses['total']:.3f}")
                if done % optim.save_every == 0 and done < end:
                    checkpoint(done)
                if snapshots and (done % optim.save_every == 0 or done == optim.steps):
                    save_snapshot(out_dir, model, tokenizer, done)
        except KeyboardInterrupt:
            if not updating:  # weights and optimizer agree with `done`: keep the progress
                checkpoint(done)
            raise
    checkpoint(done)
    return LoopResult(done, tokens, elapsed + time.perf_counter() - t0, cpu + time.process_time() - c0,
                      done >= optim.steps, losses)
