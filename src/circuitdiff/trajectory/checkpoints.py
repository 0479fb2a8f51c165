"""Which model folders make up a run, and at which training step each one was saved."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from circuitdiff.errors import CircuitDiffError

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


def _step_of(folder: Path) -> int | None:
    match = _STEP.search(folder.name)
    return None if match is None else int(match.group(1))


def _run_snapshots(run: Path) -> list[Path]:
    """Model folders under ``run/checkpoints`` (a lab run) or directly under ``run`` (step-N folders)."""
    for base in (run / SNAPSHOTS_DIR, run):
        found = [f for f in base.iterdir() if f.is_dir() and _is_model(f) and _step_of(f) is not None] \
            if base.is_dir() else []
        if found:
            return found
    return []


def find_checkpoints(paths: Sequence[str | Path]) -> list[Checkpoint]:
    """A lab run folder (its ``checkpoints/step-NNNNNN``), or model folders given in training order.

    Folders named ``step-N`` / ``checkpoint-N`` (the lab's, Hugging Face Trainer's) are ordered
    by N; other folders keep the order given and are numbered 0, 1, 2, ...
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
                                  "'circuitdiff lab distil --save-every N')")
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
