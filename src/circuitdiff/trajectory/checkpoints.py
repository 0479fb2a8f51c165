"""Which model folders make up a run, and at which training step each one was saved.

Layouts: a lab run (``RUN/checkpoints/step-NNNNNN``), a Hugging Face Trainer's ``output_dir``
(``checkpoint-N`` folders, each with its ``trainer_state.json``), or model folders given in
training order. A folder's step is the N in its name; a Trainer's ``trainer_state.json``
(``global_step``) must agree with it, and gives the step of a folder whose name has none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from circuitdiff.errors import CircuitDiffError

TRAINER_STATE = "trainer_state.json"
"""What ``transformers.Trainer`` saves beside each checkpoint's weights (``global_step`` among it)."""
SNAPSHOTS_DIR = "checkpoints"
"""The lab keeps a run's snapshots here (``circuitdiff.lab.checkpoint.SNAPSHOTS_DIR``)."""
_STEP = re.compile(r"(?:step|checkpoint)[-_]?(\d+)$")


class TrajectoryError(CircuitDiffError):
    """A run folder holds no checkpoints, or the checkpoints given cannot be ordered."""


@dataclass(frozen=True)
class Checkpoint:
    """One model folder of a run and its training step (its position, when the name has no step)."""

    step: int
    folder: Path

    @property
    def label(self) -> str:
        return f"step-{self.step:06d}"


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _trainer_step(folder: Path) -> int | None:
    """``global_step`` of the folder's ``trainer_state.json``, None without one."""
    path = folder / TRAINER_STATE
    if not path.is_file():
        return None
    try:
        step = json.loads(path.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TrajectoryError(f"{path} is not a Trainer state with a global_step") from None
    if not isinstance(step, int) or step < 0:
        raise TrajectoryError(f"{path}: global_step must be a non-negative integer, got {step!r}")
    return step


def _step_of(folder: Path) -> int | None:
    match = _STEP.search(folder.name)
    named = None if match is None else int(match.group(1))
    saved = _trainer_step(folder)
    if named is not None and saved is not None and named != saved:
        raise TrajectoryError(f"{folder} is named step {named} but its {TRAINER_STATE} says global_step {saved}")
    return named if named is not None else saved


def _run_snapshots(run: Path) -> list[Path]:
    """Model folders under ``run/checkpoints`` (a lab run) or directly under ``run`` (step-N folders)."""
    for base in (run / SNAPSHOTS_DIR, run):
        found = [f for f in base.iterdir() if f.is_dir() and _is_model(f) and _step_of(f) is not None] \
            if base.is_dir() else []
        if found:
            return found
    return []


def find_checkpoints(paths: Sequence[str | Path]) -> list[Checkpoint]:
    """A lab run folder (its ``checkpoints/step-NNNNNN``), a Trainer ``output_dir`` (its ``checkpoint-N``),
    or model folders given in training order.

    Folders with a step (named ``step-N`` / ``checkpoint-N``, or with a ``trainer_state.json``) are
    ordered by it; otherwise folders keep the order given and are numbered 0, 1, 2, ...
    """
    if not paths:
        raise TrajectoryError("give a run folder or the checkpoint folders, in training order")
    folders = [Path(p).expanduser() for p in paths]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise TrajectoryError(f"not a folder: {missing[0]}")
    if len(folders) == 1:  # a run folder (the lab's holds its final model too): its snapshots
        folders = _run_snapshots(folders[0]) or ([folders[0]] if _is_model(folders[0]) else [])
        if not folders:
            raise TrajectoryError(f"{paths[0]} holds no checkpoints (model folders named step-N, e.g. from "
                                  "'circuitdiff lab distil --save-every N', or a Trainer's checkpoint-N)")
    elif any(not _is_model(f) for f in folders):
        bad = next(f for f in folders if not _is_model(f))
        raise TrajectoryError(f"{bad} is not a model folder (no config.json); give one run folder or model folders")
    steps = [_step_of(f) for f in folders]
    if all(s is not None for s in steps):
        checkpoints = sorted((Checkpoint(s, f) for s, f in zip(steps, folders)), key=lambda c: c.step)  # type: ignore[arg-type]
    else:
        checkpoints = [Checkpoint(i, f) for i, f in enumerate(folders)]
    if len({c.step for c in checkpoints}) != len(checkpoints):
        raise TrajectoryError("two checkpoints have the same step; give each once")
    return checkpoints
