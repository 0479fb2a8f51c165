"""``CircuitDiffCallback``: the teacher compared with the student while a ``transformers.Trainer`` trains it.

    trainer.add_callback(CircuitDiffCallback("tiny-gpt2", ["ioi"], every_n_steps=50, out="runs/circuits"))

At step 0 (before the first update), every ``every_n_steps`` steps and at the end, the live
student goes through the ordinary ``compare`` (one results folder per step under
``OUT/steps``, as ``circuitdiff trajectory`` writes them), and its rows (``trajectory.rows``)
go to ``OUT/trajectory.parquet``; ``OUT/trajectory.html`` is written at the end. The
teacher is loaded once and its task runs and the random students are computed once for the
whole training (``SharedRuns``; ``null_cache`` keeps the random students on disk too).

Training is not disturbed: the student is compared in place without gradients (its
parameters frozen for the call), then every module's train/eval mode, every parameter's
``requires_grad``, its attention implementation and all random states (Python, NumPy, torch
CPU and CUDA) are put back as they were.

Scalars go through the Trainer's own logging (``on_log`` of every callback it holds), so
whatever ``report_to`` names (TensorBoard, W&B, MLflow, ...) receives them, under
``circuitdiff/<task>/<name>`` (the TensorBoard and W&B callbacks prefix ``train/``).
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler

from circuitdiff.errors import CircuitDiffError
from circuitdiff.options import OptionsError, with_options
from circuitdiff.trajectory.rows import TRAJECTORY_TABLE, trajectory_rows, write_trajectory_table

STEPS_DIR = "steps"
SCALARS = ("alignment", "alignment_lo", "alignment_hi", "null", "null_q95", "teacher_effective_number",
           "student_effective_number", "student_effective_number_lo", "student_effective_number_hi",
           "teacher_accuracy", "student_accuracy", "student_clean_metric", "circuit_overlap")
"""The trajectory columns logged as ``circuitdiff/<task>/<column>`` (those with a value at that step)."""


@contextmanager
def untouched(model: torch.nn.Module) -> Iterator[None]:
    """Whatever a comparison changes in a training model and the process, put back on exit.

    Modes per module (a model may keep some modules in eval on purpose), ``requires_grad``
    per parameter, the attention implementation (circuitdiff reads attention weights with the
    eager one), and the Python, NumPy and torch (CPU and every CUDA device) random states.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    config = getattr(model, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    py_state, np_state, cpu_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        if attention is not None and getattr(config, "_attn_implementation", None) != attention:
            model.set_attn_implementation(attention)
        for module, training in modes:
            module.training = training
        for param, requires in grads:
            param.requires_grad_(requires)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _calling_handler() -> CallbackHandler | None:
    """The ``CallbackHandler`` whose ``call_event`` is calling this callback's hook (two frames up)."""
    frame = inspect.currentframe()
    try:
        for _ in range(4):
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, CallbackHandler):
                return owner
        return None
    finally:
        del frame


class CircuitDiffCallback(TrainerCallback):
    """Compare the student with ``teacher`` at step 0, every ``every_n_steps`` steps and at the end.

    Args:
        teacher: any model ``compare`` takes: a built-in name, a folder, a ``.gguf`` file, a Hub
            id, a ``LoadedModel`` or a ``(model, tokenizer)`` pair (switched to eval and frozen).
        tasks: built-in task names or JSONL task files.
        every_n_steps: compare every this many optimizer steps (also at step 0 and the last step).
        out: folder for ``trajectory.parquet``, ``trajectory.html`` and ``steps/step-NNNNNN``
            (default: ``<output_dir>/circuitdiff``).
        tokenizer: the student's tokenizer (default: the Trainer's ``processing_class``).
        null_cache: a folder keeping the random students on disk (as ``compare``'s).
        log: log the scalars through the Trainer's integrations (``report_to``).
        report: write ``trajectory.html`` at the end.
        trainer: the Trainer, when this callback is called from somewhere other than its
            ``CallbackHandler`` (normally found by itself).
        **options: ``CompareOptions`` fields (``n_prompts=32``, ``null_model=False``, ``method="attribution"``).
    """

    def __init__(self, teacher: Any, tasks: str | Sequence[str], *, every_n_steps: int = 50,
                 out: str | Path | None = None, tokenizer: Any = None, null_cache: str | Path | None = None,
                 log: bool = True, report: bool = True, trainer: Any = None, n_prompts: int = 32,
                 **options: Any) -> None:
        if every_n_steps < 1:
            raise OptionsError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.teacher_spec, self.tasks = teacher, [tasks] if isinstance(tasks, str) else list(tasks)
        self.every_n_steps, self.out = every_n_steps, None if out is None else Path(out)
        self.tokenizer, self.null_cache, self.log, self.report = tokenizer, null_cache, log, report
        self.options = with_options(None, n_prompts=n_prompts, **options)
        self.handler: CallbackHandler | None = getattr(trainer, "callback_handler", None)
        self.shared: Any = None
        self.rows: list[dict[str, Any]] = []
        self.seconds: list[float] = []
        """Wall time of each comparison (the callback's cost per call)."""

    # -- Trainer hooks -------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        from circuitdiff.compare import as_loaded_model, check_paths
        from circuitdiff.shared_runs import SharedRuns

        self.handler = _calling_handler() or self.handler
        if self.log and self.handler is None:
            raise CircuitDiffError("CircuitDiffCallback found no Trainer calling it; pass trainer=... or log=False")
        self.tokenizer = self.tokenizer if self.tokenizer is not None else kwargs.get("processing_class")
        if self.tokenizer is None:
            raise OptionsError("CircuitDiffCallback needs the student's tokenizer: give the Trainer a "
                               "processing_class or the callback tokenizer=...")
        self.out = self.out if self.out is not None else Path(args.output_dir) / "circuitdiff"
        if not state.is_world_process_zero:  # several processes: the main one compares, the others train on
            return
        check_paths(self.tasks, self.options, self.out)
        if self.shared is None:
            device = next(model.parameters()).device
            self.shared = SharedRuns(as_loaded_model(self.teacher_spec, device=str(device)))
        self.rows = self._earlier_rows(state.global_step)
        self._compare(args, state, control, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # DefaultFlowCallback, first in the list, has already said whether this is the last step
        if state.global_step % self.every_n_steps == 0 or control.should_training_stop:
            self._compare(args, state, control, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.rows or self.rows[-1]["step"] != state.global_step:  # stopped by something after on_step_end
            self._compare(args, state, control, model)
        if self.report and state.is_world_process_zero:
            from circuitdiff.trajectory.report import write_trajectory_report

            write_trajectory_report(self.table(), self.out, f"Trajectory: {self.shared.teacher.name} during training")

    # -- the work ----------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The rows so far, as ``trajectory.parquet`` holds them."""
        from circuitdiff.trajectory.rows import COLUMNS

        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def _earlier_rows(self, start: int) -> list[dict[str, Any]]:
        """A resumed run keeps the rows its first session wrote before ``start``; a fresh one none."""
        path = self.out / TRAJECTORY_TABLE
        if start == 0 or not path.is_file():
            return []
        earlier = pd.read_parquet(path)
        return [row for row in earlier.to_dict("records") if row["step"] < start]

    def _compare(self, args: Any, state: Any, control: Any, model: torch.nn.Module) -> None:
        """One ``compare`` of the live student, its rows kept and written, its scalars logged."""
        from circuitdiff.compare import compare

        if not state.is_world_process_zero:
            return
        step = state.global_step
        folder = self.out / STEPS_DIR / f"step-{step:06d}"
        start = time.perf_counter()
        with untouched(model):
            results = compare(self.shared.teacher, (model, self.tokenizer), self.tasks, self.options, out=folder,
                              progress=False, report=False, resume=False, shared=self.shared,
                              null_cache=self.null_cache)
        self.seconds.append(time.perf_counter() - start)
        rows = trajectory_rows(step, f"training step {step}", results)
        self.rows = [r for r in self.rows if r["step"] != step] + rows
        write_trajectory_table(self.rows, self.out)
        if self.log:
            scalars = {f"circuitdiff/{row['task']}/{name}": float(row[name])
                       for row in rows for name in SCALARS if row.get(name) is not None}
            scalars["circuitdiff/seconds"] = self.seconds[-1]
            state.log_history.append({**scalars, "step": step})
            should_log = control.should_log  # the handler clears it: the Trainer's own log at this step is still due
            self.handler.on_log(args, state, control, scalars)
            control.should_log = should_log
