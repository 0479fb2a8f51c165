"""Trajectories: the teacher compared with every checkpoint of a distillation run.

    from circuitdiff.trajectory import run_trajectory
    table = run_trajectory("tiny-gpt2", ["runs/student"], ["ioi"], out="runs/student-trajectory")

Each checkpoint goes through the ordinary ``compare`` pipeline into its own folder, so a
row of ``trajectory.parquet`` is exactly what ``circuitdiff compare`` says of that
checkpoint, and a finished checkpoint is reused when the trajectory is run again.
"""

from __future__ import annotations

from typing import Any

from circuitdiff.trajectory.checkpoints import Checkpoint, find_checkpoints
from circuitdiff.trajectory.rows import TRAJECTORY_TABLE, trajectory_rows

__all__ = ["TRAJECTORY_TABLE", "Checkpoint", "find_checkpoints", "run_trajectory", "trajectory_rows"]


def __getattr__(name: str) -> Any:
    """``run_trajectory`` on first use: it imports torch, which ``circuitdiff --help`` must not wait for."""
    if name == "run_trajectory":
        from circuitdiff.trajectory.run import run_trajectory

        return run_trajectory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
